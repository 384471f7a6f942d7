"""Batches drawn on the device from a data set held in device memory.

A data set that fits in GPU memory (the shapes, CIFAR, STL-10 at 96 px) needs no DataLoader: its uint8
images are copied to the device once, each batch is gathered there by index, and the method's
``make_views`` then augments the whole batch on the device (``augment_on="device"``). No worker
processes, no pinned copies, no host-to-device transfer per step.

:class:`DeviceBatches` draws the *same batches in the same order* as the trainer's DataLoader path
(``DistributedSampler(shuffle=True, seed=seed, drop_last=True)`` with ``set_epoch(epoch)``, then batches
with ``drop_last=True``), so a run gives the same result on either path:

1. a permutation of the N indices from ``torch.randperm(N)`` with a CPU generator seeded ``seed + epoch``;
2. truncated to ``(N // world) * world`` indices (every process gets as many);
3. this process's share: every ``world``-th index starting at ``rank``;
4. cut into batches of ``batch_size``, the last incomplete batch dropped.

    >>> batches = DeviceBatches(train_set.images.cuda(), train_set.labels.cuda(), batch_size=512, seed=0)
    >>> batches.set_epoch(epoch)
    >>> for images, labels in batches: ...
"""

from __future__ import annotations

import torch

from sslbook.data.base import DataError


class DeviceBatches:
    """Per-process batches ``(images, labels[, indices])`` gathered by index from tensors on one device.

    Args:
        images: N×3×H×W uint8, already on the device the batches should be on.
        labels: N int64 on the same device.
        batch_size: images per batch of this process (the global batch / ``world``).
        rank, world: this process and the number of processes (0 and 1 on one process).
        seed: the shuffling seed (the config's ``seed``, as the DistributedSampler gets).
        with_indices: also yield each image's index in the data set (memory-bank methods), int64 on the device.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        with_indices: bool = False,
    ):
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise DataError(f"DeviceBatches expects N×3×H×W uint8 images, got {tuple(images.shape)} {images.dtype}")
        if len(labels) != len(images) or labels.device != images.device:
            raise DataError(
                f"DeviceBatches: {len(images)} images on {images.device} but {len(labels)} labels on {labels.device}"
            )
        if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
            raise ValueError(f"DeviceBatches: rank must be in [0, world), got rank={rank!r}, world={world!r}")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"DeviceBatches: batch_size must be a positive integer, got {batch_size!r}")
        self.images, self.labels = images, labels.long()
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world, int(seed)
        self.with_indices = with_indices
        self.epoch = 0

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def per_process(self) -> int:
        """Images this process sees per epoch: ``N // world`` (DistributedSampler with ``drop_last=True``)."""
        return len(self.images) // self.world

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch``, as ``DistributedSampler.set_epoch`` does."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_process // self.batch_size

    def order(self) -> torch.Tensor:
        """This process's indices for the current epoch (int64, on the CPU), before batching."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.images), generator=g)
        return perm[: self.per_process * self.world][self.rank :: self.world]

    def __iter__(self):
        # A DataLoader draws one number from the global generator each time an epoch's iteration starts
        # (the base seed of its workers, drawn even with no workers). Drawing it here too keeps the random
        # stream of the augmentations, and so a whole run, identical on both paths.
        torch.empty((), dtype=torch.int64).random_()
        order = self.order()[: len(self) * self.batch_size].to(self.device, non_blocking=True)
        for batch in order.view(len(self), self.batch_size):
            out = (self.images[batch], self.labels[batch])
            yield (*out, batch) if self.with_indices else out

"""The pieces that memory-bank and momentum methods share: a FIFO queue of keys,
a memory bank of every training image, and MoCo's shuffled BN. The momentum (EMA) copy of a network and
its update θk ← m·θk + (1 − m)·θq are :mod:`sslbook.models.ema`'s, shared with BYOL; the momentum
schedule is :func:`sslbook.schedules.cosine_momentum` (importable from here too).

They are modules with **registered buffers** (queue, pointer, bank), so ``state_dict()`` — and with it
every checkpoint — carries them together with the key encoder: a resumed run continues exactly where
it stopped. Under ``torchrun`` every process enqueues (or writes) the keys of the *whole* global batch,
so all processes keep the same dictionary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sslbook import distributed as dist
from sslbook.schedules import cosine_momentum  # noqa: F401 (re-exported: the momentum schedule lives in sslbook.schedules)


def check_temperature(name: str, temperature: float) -> float:
    if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"{name} needs a temperature > 0 (it divides the similarities), got {temperature!r}")
    return float(temperature)


class KeyQueue(nn.Module):
    """MoCo's dictionary: a FIFO queue of the K most recent keys (He et al. 2020, sec. 3.2).

    ``keys``: K×D buffer of unit vectors (random at start); ``ptr``: where the next batch goes. Each step
    the current keys are enqueued and the oldest batch leaves. K must be a multiple of the global batch
    so a batch never wraps around the end.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if not (isinstance(size, int) and size > 0):
            raise ValueError(f"the queue size must be a positive integer, got {size!r}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))  # K×D
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def check_batch(self, batch: int) -> None:
        if self.size % batch:
            raise ValueError(
                f"the queue size {self.size} is not a multiple of the global batch {batch}: "
                f"choose queue_size = a multiple of {batch} (e.g. {max(1, self.size // batch) * batch})"
            )

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """keys: B×D of this process; every process's keys are gathered and enqueued (oldest out)."""
        keys = dist.all_gather(keys.detach().float())  # (world·B)×D
        b = keys.shape[0]
        self.check_batch(b)
        p = int(self.ptr)
        self.keys[p : p + b] = F.normalize(keys, dim=1)
        self.ptr.fill_((p + b) % self.size)


class MemoryBank(nn.Module):
    """Wu et al. 2018's memory bank: one D-dimensional unit vector per training image, updated by momentum.

    ``vectors``: N×D buffer (N = the training-set size). ``update(index, v)`` sets
    v̄ ← normalise(m·v̄ + (1 − m)·v); ``sample(k)`` draws k random entries as negatives.

    The bank starts **empty**: every slot is the zero vector, which scores 0 against any query, so an
    image not yet seen neither attracts nor repels anything; its first update writes normalise(v)
    (m·0 + (1 − m)·v, normalised, is v's direction). Wu et al. start from random unit vectors, which
    over 200 epochs is forgotten; in a run of a few epochs, where each slot is written only a few
    times, random positives would be a large part of the training signal (and with m = 0.5 half of a
    slot is still random after its first write).
    """

    def __init__(self, size: int, dim: int, momentum: float = 0.5):
        super().__init__()
        if not (isinstance(size, int) and size > 0):
            raise ValueError(
                f"the memory bank size must be the number of training images (a positive integer), got {size!r}"
            )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"the memory bank momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("vectors", torch.zeros(size, dim))  # N×D, all slots empty

    @property
    def filled(self) -> int:
        """How many slots have been written at least once."""
        return int((self.vectors.abs().sum(1) > 0).sum())

    @property
    def size(self) -> int:
        return self.vectors.shape[0]

    def check_index(self, index: torch.Tensor, method: str) -> torch.Tensor:
        if index is None:
            raise ValueError(
                f"{method} needs each image's index in the training set (its memory-bank slot): call "
                f"make_views(images, labels, indices=...) with the dataset indices of the batch"
            )
        index = torch.as_tensor(index).long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.size):
            raise ValueError(
                f"{method}: image index {int(index.max())} is outside the memory bank of {self.size} entries; "
                f"set method_kwargs bank_size to the training-set size"
            )
        return index

    def get(self, index: torch.Tensor) -> torch.Tensor:
        return self.vectors[index].clone()  # B×D

    def sample(self, k: int) -> torch.Tensor:
        idx = torch.randint(0, self.size, (k,), device=self.vectors.device)
        return self.vectors[idx].clone()  # k×D

    @torch.no_grad()
    def update(self, index: torch.Tensor, v: torch.Tensor) -> None:
        """index: B, v: B×D of this process; gathered over processes so every bank stays the same."""
        index = dist.all_gather(index.to(self.vectors.device))
        v = F.normalize(dist.all_gather(v.detach().float()), dim=1)
        mixed = self.momentum * self.vectors[index] + (1 - self.momentum) * v
        self.vectors[index] = F.normalize(mixed, dim=1)


@torch.no_grad()
def shuffled_bn_forward(encoder: nn.Module, x: torch.Tensor, splits: int = 1) -> torch.Tensor:
    """Encode the key batch with **shuffled BN** (He et al. 2020, sec. 3.3).

    With BN, a query and its positive key computed in the same batch can "cheat" through the batch
    statistics. MoCo shuffles the key batch across GPUs, so a key's BN statistics come from other
    images than its query's. Under torchrun we do exactly that: gather every process's keys (in rank
    order: the global batch), draw a permutation of the global batch on rank 0 (from its torch RNG)
    and broadcast it, encode this process's slice of the shuffled batch (BN over that slice only),
    gather the encoded slices, unshuffle, and keep this process's rows. ``splits`` is then ignored:
    each process is one split. On one process the equivalent is to shuffle and encode in ``splits``
    sub-batches, each with its own BN statistics (the "split BN" of single-GPU MoCo code); with
    ``splits`` = K and the same RNG state it draws the same permutation as rank 0 of a K-process run
    and gives the same keys. x: B×3×H×W → B×D.

    ``encoder`` must keep per-process BN (MoCo marks its key encoder ``keep_local_bn``, so ``sync_bn``
    does not turn it into a global BN that would undo the shuffle).
    """
    world = dist.world_size()
    if world > 1:
        b = x.shape[0]
        xs = dist.all_gather(x)  # (world·b)×…: the global batch, process 0's rows first
        if dist.rank() == 0:
            perm = torch.randperm(xs.shape[0], device=x.device)
        else:
            perm = torch.empty(xs.shape[0], dtype=torch.long, device=x.device)
        torch.distributed.broadcast(perm, src=0)  # one permutation for every process
        mine = perm.view(world, -1)[dist.rank()]
        keys = dist.all_gather(encoder(xs[mine]))  # keys of perm order
        unshuffle = torch.argsort(perm)
        return keys[unshuffle].view(world, b, -1)[dist.rank()]
    if splits <= 1:
        return encoder(x)
    if x.shape[0] % splits:
        raise ValueError(f"shuffled BN: the batch of {x.shape[0]} does not split into {splits} equal sub-batches")
    perm = torch.randperm(x.shape[0], device=x.device)
    keys = torch.cat([encoder(chunk) for chunk in x[perm].chunk(splits)])
    return keys[torch.argsort(perm)]

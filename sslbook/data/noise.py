"""``random``: uint8 images of uniform noise with random labels, for timing runs (no download, any size).

Nothing can be learned from them (a kNN or linear probe reads chance, 10%), but a 32×32 noise image costs a
training step exactly what a CIFAR-10 image does, so ``bench`` and ``train --data random`` measure the speed
of a CIFAR recipe on a machine that has no CIFAR-10.
"""

from __future__ import annotations

import torch

from sslbook.data.base import DataError, DataInfo, TensorImageDataset

SIZES = {"train": 50_000, "test": 10_000}  # CIFAR-10's


def random_dataset(
    n: int = SIZES["train"], image_size: int = 32, num_classes: int = 10, seed: int = 0
) -> TensorImageDataset:
    """``n`` random uint8 images of shape 3×size×size (CIFAR's by default) with random labels, in memory."""
    if not (isinstance(n, int) and n > 0):
        raise ValueError(f"the number of random images must be a positive integer, got {n!r}")
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return TensorImageDataset(images, labels, DataInfo("random", [str(i) for i in range(num_classes)], image_size))


def load_random(
    split: str, image_size: int = 32, n_train: int = SIZES["train"], n_test: int = SIZES["test"], seed: int = 0
) -> TensorImageDataset:
    """The ``train`` or ``test`` split of the ``random`` data set (different images: seeds ``seed``, ``seed + 1``)."""
    if split not in SIZES:
        raise DataError(f"random has splits 'train' and 'test', not {split!r}")
    return random_dataset(n_train if split == "train" else n_test, image_size, seed=seed + (split == "test"))

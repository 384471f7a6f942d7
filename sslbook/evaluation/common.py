"""What the evaluation protocols share: batches out of any data set, its labels, label checks."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from sslbook.data.base import TensorImageDataset


def _iterate(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images uint8 B×3×H×W, labels int64 B)`` batches of any data set.

    A :class:`TensorImageDataset` is sliced directly (no per-item Python calls); anything else
    goes through a :class:`~torch.utils.data.DataLoader` with the default collate function.
    """
    if isinstance(dataset, TensorImageDataset):
        n = len(dataset)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, batch_size):
            if order is None:
                yield dataset.images[start : start + batch_size], dataset.labels[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                yield dataset.images[idx], dataset.labels[idx]
        return
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
    for images, labels in loader:
        yield images, torch.as_tensor(labels).long()


def _dataset_labels(dataset: Dataset) -> torch.Tensor:
    """All labels of a data set as int64 N, reading images only when there is no other way."""
    if isinstance(dataset, Subset):
        return _dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    for attr in ("labels", "targets"):  # ours, and torchvision's convention
        labels = getattr(dataset, attr, None)
        if labels is not None and len(labels) == len(dataset):
            return torch.as_tensor(labels).long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def _info_num_classes(dataset: Dataset) -> int | None:
    """``dataset.info.num_classes`` if the data set (or the one under a Subset) has it."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    info = getattr(dataset, "info", None)
    n = getattr(info, "num_classes", None)
    return int(n) if n else None


def _check_labels(labels: torch.Tensor, what: str) -> None:
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{what} contain negative (unlabelled) entries; drop them first")

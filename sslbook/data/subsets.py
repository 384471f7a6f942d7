"""The labelled subset of a semi-supervised run: which training images keep their labels.

One function decides it, :func:`labelled_subset`, so a label fraction and a seed name the same images for
every method that trains on labels (``TrainConfig.label_fraction``) and for the fine-tuning protocol
(:func:`sslbook.evaluation.finetune`): "1% of the labels" is one fixed set of images throughout the book.
:func:`hide_labels` gives the training set as such a method sees it, with −1 (unlabelled) elsewhere.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from sslbook.data.base import TensorImageDataset


def labelled_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of a class-balanced ``fraction`` of a labelled set, deterministic given ``seed``.

    Each class ``c`` with ``n_c`` examples contributes ``max(1, round(fraction · n_c))`` of them, chosen
    uniformly at random with a generator of its own (the global random state is neither read nor changed);
    unlabelled entries (label < 0) are never chosen. ``labels`` are those of the training split, so the
    indices are training-set indices. Returns the indices sorted, int64.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = torch.as_tensor(labels).long()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        members = torch.nonzero(labels == c).flatten()
        n_c = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:n_c]])
    if not chosen:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(chosen).sort().values


class PartlyLabelled(Dataset):
    """Any data set with its labels kept only at ``keep`` (indices); every other item's label is −1."""

    def __init__(self, dataset: Dataset, keep: torch.Tensor):
        self.dataset = dataset
        self.info = getattr(dataset, "info", None)
        self.keep = torch.zeros(len(dataset), dtype=torch.bool)
        self.keep[torch.as_tensor(keep, dtype=torch.long)] = True

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, label = self.dataset[i]
        return image, int(label) if self.keep[i] else -1


def hide_labels(dataset: Dataset, keep: torch.Tensor) -> Dataset:
    """``dataset`` with the labels of the items at ``keep`` and −1 for every other item. An in-memory set stays
    one (a :class:`TensorImageDataset` sharing the images), so its batches can still be drawn on the device."""
    if isinstance(dataset, TensorImageDataset):
        labels = torch.full_like(dataset.labels, -1)
        keep = torch.as_tensor(keep, dtype=torch.long)
        labels[keep] = dataset.labels[keep]
        return TensorImageDataset(dataset.images, labels, dataset.info)
    return PartlyLabelled(dataset, keep)

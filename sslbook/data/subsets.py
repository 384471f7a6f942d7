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


class LabelledStream:
    """A stream of labelled batches beside the main one: ``per_step`` images of the labelled subset a step.

    Semi-supervised papers (MixMatch, S4L) draw a labelled batch and an unlabelled batch each step; with 1% of
    the labels, a shared batch would hold about one labelled image. The stream walks through the labelled
    subset in a fresh random order at each pass (without replacement within a pass), and the images of step
    ``s`` depend on ``s`` (and the seed and process) alone, so a resumed run draws what it would have drawn.

    ``dataset`` is the training set (any data set of ``(uint8 image, label)``), ``indices`` the labelled
    subset's indices into it (:func:`labelled_subset`). A subset of an in-memory set is copied to ``device``
    once; any other is read item by item at each step.
    """

    def __init__(
        self, dataset: Dataset, indices: torch.Tensor, per_step: int, seed: int = 0, rank: int = 0, device="cpu"
    ):
        indices = torch.as_tensor(indices, dtype=torch.long)
        if per_step < 1:
            raise ValueError(f"a labelled stream needs at least 1 image a step, got {per_step}")
        if len(indices) == 0:
            raise ValueError("a labelled stream needs a labelled subset with at least one image, got none")
        self.dataset, self.indices, self.per_step = dataset, indices, int(per_step)
        self.seed, self.rank, self.device = int(seed), int(rank), torch.device(device)
        self._orders: dict[int, torch.Tensor] = {}
        if isinstance(dataset, TensorImageDataset):
            self.images = dataset.images[indices].to(self.device)
            self.labels = dataset.labels[indices].to(self.device)
        else:
            self.images = self.labels = None

    def __len__(self) -> int:
        return len(self.indices)

    def _order(self, p: int) -> torch.Tensor:
        """The order of pass ``p`` over the subset (positions 0…n−1), seeded by (seed, rank, pass)."""
        if p not in self._orders:
            if len(self._orders) > 4:
                self._orders.clear()
            g = torch.Generator().manual_seed(1_000_003 * (self.seed + 1) + 7_919 * self.rank + p)
            self._orders[p] = torch.randperm(len(self.indices), generator=g)
        return self._orders[p]

    def positions(self, step: int) -> torch.Tensor:
        """The positions in the subset (0…n−1) of step ``step``'s images."""
        n = len(self.indices)
        k = torch.arange(step * self.per_step, (step + 1) * self.per_step)
        return torch.stack([self._order(int(i) // n)[int(i) % n] for i in k])

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images uint8 per_step×3×H×W, labels int64 per_step)`` of step ``step``, on the stream's device."""
        pos = self.positions(step)
        if self.images is not None:
            pos = pos.to(self.device)
            return self.images[pos], self.labels[pos]
        items = [self.dataset[int(self.indices[int(i)])] for i in pos]
        images = torch.stack([torch.as_tensor(im) for im, _ in items]).to(self.device)
        labels = torch.tensor([int(y) for _, y in items], dtype=torch.long, device=self.device)
        return images, labels

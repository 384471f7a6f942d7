"""A data set that also returns each image's index: what memory-bank methods need to find an image's slot.

>>> ds = WithIndex(load_dataset("shapes", "train"))
>>> image, label, index = ds[7]          # index == 7
"""

from __future__ import annotations

from torch.utils.data import Dataset


class WithIndex(Dataset):
    """Wraps any sslbook data set: ``(image, label)`` → ``(image, label, index)``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.info = getattr(dataset, "info", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, label = self.dataset[i]
        return image, label, i

"""Dataset containers shared by every data source.

Every data set in sslbook yields ``(image, label)`` with ``image`` a ``uint8`` tensor of shape
``3×H×W`` and ``label`` an ``int``. Images become floats in [0, 1] only on the device, inside the
view-making code of a method (see :mod:`sslbook.augment`), so a batch travels as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset


class DataError(RuntimeError):
    """A data set is missing, malformed or unreadable. The message says what and where."""


@dataclass
class DataInfo:
    """What a model needs to know about a data set: its classes, image size and channel statistics."""

    name: str
    classes: list[str]
    image_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        """What a checkpoint stores of it (plain lists, readable with ``weights_only=True`` and as JSON)."""
        return dict(
            name=self.name,
            classes=list(self.classes),
            image_size=self.image_size,
            mean=list(self.mean),
            std=list(self.std),
        )

    @classmethod
    def from_dict(cls, d: dict) -> DataInfo:
        """The inverse of :meth:`to_dict`."""
        return cls(d["name"], list(d["classes"]), d["image_size"], tuple(d["mean"]), tuple(d["std"]))


class TensorImageDataset(Dataset):
    """A data set held in memory: ``images`` N×3×H×W uint8, ``labels`` N int64 (−1 = unlabelled)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DataInfo):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"expected N×3×H×W uint8 images, got {tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.info = info

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def subset(self, index: torch.Tensor) -> "TensorImageDataset":
        return TensorImageDataset(self.images[index], self.labels[index], self.info)


class SegmentedImageDataset(TensorImageDataset):
    """A :class:`TensorImageDataset` that also knows, for every image, the class of every pixel and the
    labelled object's box: what the dense protocols (:mod:`sslbook.dense`) and attention maps are scored on.

    Items are still ``(image, label)``, so every other protocol reads it as before.

    - ``masks``: uint8 N×H×W, the class of each pixel: 0 = background, ``1 + c`` = an object of
      class ``c`` (``info.extra["mask_classes"]`` names them);
    - ``boxes``: int64 N×4, the labelled object's box ``(x0, y0, x1, y1)`` in pixels, ends exclusive;
    - :meth:`object_masks`: bool N×H×W, the labelled object's own pixels (``masks == 1 + label``).
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, info: DataInfo, masks: torch.Tensor, boxes: torch.Tensor
    ):
        super().__init__(images, labels, info)
        if masks.shape != (images.shape[0], *images.shape[2:]):
            raise DataError(f"expected N×H×W masks for {tuple(images.shape)} images, got {tuple(masks.shape)}")
        if boxes.shape != (images.shape[0], 4):
            raise DataError(f"expected N×4 boxes, got {tuple(boxes.shape)}")
        self.masks, self.boxes = masks, boxes.long()

    @property
    def mask_classes(self) -> list[str]:
        return list(self.info.extra.get("mask_classes") or ["background", *self.info.classes])

    def object_masks(self) -> torch.Tensor:
        """The labelled object's pixels, bool N×H×W."""
        return self.masks.long() == (self.labels + 1).view(-1, 1, 1)

    def subset(self, index: torch.Tensor) -> "SegmentedImageDataset":
        return SegmentedImageDataset(
            self.images[index], self.labels[index], self.info, self.masks[index], self.boxes[index]
        )

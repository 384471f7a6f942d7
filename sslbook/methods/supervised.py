"""Supervised learning with labels: the upper reference of every comparison in the book.

The backbone plus a linear classifier, trained with cross-entropy on one lightly augmented view
(random resized crop with scale 0.35–1 and a horizontal flip). It is a method like the others, so the
same trainer, checkpoints and evaluation protocols apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.augment import random_resized_crop
from sslbook.methods.base import Method


class Supervised(Method):
    name = "supervised"

    def __init__(self, backbone, info, image_size, crop_scale=(0.35, 1.0)):
        super().__init__(backbone, info, image_size)
        self.crop_scale = tuple(crop_scale)
        self.classifier = nn.Linear(backbone.out_dim, info.num_classes)

    @torch.no_grad()
    def make_views(self, images, labels):
        return [random_resized_crop(images, self.image_size, self.crop_scale, flip_p=0.5)]

    def forward(self, views, labels):
        logits = self.classifier(self.backbone(views[0]))  # N×classes
        if (labels < 0).any():
            raise ValueError("the supervised method needs labels; this data split has unlabelled images")
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "acc": acc}

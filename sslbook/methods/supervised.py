"""Supervised learning with labels: the upper reference of every comparison in the book.

The backbone plus a linear classifier, trained with cross-entropy on one lightly augmented view
(random resized crop with scale 0.35–1 and a horizontal flip). It is a method like the others, so the
same trainer, checkpoints and evaluation protocols apply.

It declares ``uses_labels``: with ``label_fraction`` set (``--label-fraction 0.01``) it is the
supervised-only baseline of semi-supervised learning. It trains on the same batches as the
semi-supervised methods, and the cross-entropy is over the labelled images of each batch only (the images
outside the labelled subset come with label −1 and are ignored), which makes it the semi-supervised
methods' own supervised term alone: S4L with weight w = 0.
"""

from __future__ import annotations

import torch
from torch import nn

from sslbook.augment import random_resized_crop
from sslbook.losses import masked_cross_entropy
from sslbook.methods.base import Method, check_labelled_batch


class Supervised(Method):
    name = "supervised"
    uses_labels = True

    def __init__(self, backbone, info, image_size, crop_scale=(0.35, 1.0), labelled_batch=0):
        super().__init__(backbone, info, image_size)
        self.labelled_batch_size = check_labelled_batch(self.name, labelled_batch)
        self.crop_scale = tuple(crop_scale)
        self.classifier = nn.Linear(backbone.out_dim, info.num_classes)

    @torch.no_grad()
    def make_views(self, images, labels):
        return [random_resized_crop(images, self.image_size, self.crop_scale, flip_p=0.5)]

    def forward(self, views, labels):
        logits = self.classifier(self.backbone(views[0]))  # N×classes
        loss = masked_cross_entropy(logits, labels)  # the labelled images of the batch (label −1: ignored)
        labelled = labels >= 0
        acc = ((logits.argmax(1) == labels) & labelled).sum() / labelled.sum().clamp_min(1)
        return {"loss": loss, "acc": acc}

    def classify(self, images):
        return self.classifier(self.backbone(images))

"""S4L-Exemplar (Zhai, Oliver, Kolesnikov & Beyer, "S4L: Self-Supervised Semi-Supervised Learning", ICCV 2019).

The objective of S4L-Rotation (:mod:`sslbook.methods.s4l_rotation`), with Exemplar (Dosovitskiy et al. 2014)
as the self-supervised task::

    L = L_sup(labelled images) + w · L_self(all images),   w = 1 in the paper

Exemplar makes the representation invariant to strong augmentation: each image of the batch is copied several
times (8 in the paper), each copy augmented on its own (random resized crop, flip, colour jitter, random grey),
and a batch-hard triplet loss (Hermans, Beyer & Leibe 2017; :func:`sslbook.losses.batch_hard_triplet`, soft
margin by default) on the L2-normalised embeddings (as the official code does) pulls the copies of one image
together and pushes the nearest copy of another image away. L_sup is the cross-entropy of a linear classifier
on every copy of each labelled image (its label copied to each).

The trainer hides the labels outside the labelled subset (−1). The paper draws a labelled and an unlabelled
batch each step: ``labelled_batch=B`` asks the trainer for B images of the labelled subset in front of every
batch (:attr:`sslbook.methods.base.Method.labelled_batch_size`); with 0 the labelled images come at the data's
rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.augment import color_jitter, random_grayscale, random_resized_crop
from sslbook.losses import batch_hard_triplet, masked_cross_entropy
from sslbook.methods.base import Method, check_labelled_batch
from sslbook.methods.s4l_rotation import s4l_loss


class S4LExemplar(Method):
    name = "s4l_exemplar"
    uses_labels = True

    def __init__(
        self,
        backbone,
        info,
        image_size,
        weight=1.0,
        copies=8,
        dim=128,
        margin=None,
        normalize=True,
        crop_scale=(0.2, 1.0),
        jitter_p=0.8,
        gray_p=0.2,
        labelled_batch=0,
    ):
        super().__init__(backbone, info, image_size)
        self.labelled_batch_size = check_labelled_batch(self.name, labelled_batch)
        if weight < 0:
            raise ValueError(f"s4l_exemplar's weight w must be >= 0, got {weight}")
        if copies < 2:
            raise ValueError(f"s4l_exemplar needs at least 2 copies of each image, got {copies}")
        self.weight, self.copies, self.margin, self.normalize = float(weight), int(copies), margin, bool(normalize)
        self.crop_scale, self.jitter_p, self.gray_p = tuple(crop_scale), jitter_p, gray_p
        d = backbone.out_dim
        self.classifier = nn.Linear(d, info.num_classes)
        self.embedding = nn.Linear(d, dim)  # the triplet loss's embedding

    @torch.no_grad()
    def make_views(self, images, labels):
        """(copies·N)×3×H×W, grouped by copy: rows k·N … k·N+N−1 are copy k of the N images."""
        out = []
        for _ in range(self.copies):
            x = random_resized_crop(images, self.image_size, self.crop_scale, flip_p=0.5)
            x = color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=self.jitter_p)
            out.append(random_grayscale(x, self.gray_p))
        return torch.cat(out)

    def forward(self, views, labels):
        n = labels.shape[0]
        features = self.backbone(views)
        ids = torch.arange(n, device=views.device).repeat(self.copies)  # which image each copy is of
        z = self.embedding(features)
        if self.normalize:
            z = F.normalize(z.float(), dim=1)
        self_loss = batch_hard_triplet(z, ids, self.margin)
        class_labels = labels.repeat(self.copies)
        class_logits = self.classifier(features)
        sup = masked_cross_entropy(class_logits, class_labels)
        labelled = class_labels >= 0
        acc = ((class_logits.argmax(1) == class_labels) & labelled).sum() / labelled.sum().clamp_min(1)
        return {"loss": s4l_loss(sup, self_loss, self.weight), "sup_loss": sup, "self_loss": self_loss, "acc": acc}

    def classify(self, images):
        return self.classifier(self.backbone(images))

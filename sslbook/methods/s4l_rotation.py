"""S4L-Rotation (Zhai, Oliver, Kolesnikov & Beyer, "S4L: Self-Supervised Semi-Supervised Learning", ICCV 2019).

Semi-supervised learning with a self-supervised task as the loss on the unlabelled images: one network, two
heads on the same representation, one objective::

    L = L_sup(labelled images) + w · L_self(all images)

L_sup is the cross-entropy of a linear classifier on the labelled images of the batch, under every rotation
they appear in (the official configuration copies an image's label to its rotated copies); L_self is RotNet's
4-way rotation prediction (Gidaris, Singh & Komodakis 2018) on every image of the batch, the labelled ones
included (the paper applies the self-supervised loss to both). The paper uses w = 1.

The trainer gives the method labels only for the labelled subset (``label_fraction``; −1 elsewhere: see
:attr:`sslbook.methods.base.Method.uses_labels`). The paper draws a labelled
and an unlabelled batch of equal size each step: ``labelled_batch=B`` asks the trainer for B images of the
labelled subset in front of every batch (:attr:`sslbook.methods.base.Method.labelled_batch_size`); with 0 the
labelled images come at the data's rate (about one in a batch of 128 with 1% of the labels).

Views: a lightly augmented copy of each image (random resized crop, horizontal flip), the classifier's input,
and its rotations (:func:`sslbook.methods.rotnet.rotate_batch`). With ``all_rotations`` every image appears
under all four angles; otherwise as itself (upright) and once more at a random angle (2 images per image a
step instead of 4; the rotation loss is on the second copy). ``classify_rotated=False`` trains the classifier on
the upright copies only (the paper's classifier also sees the rotated ones).
"""

from __future__ import annotations

import torch
from torch import nn

from sslbook.augment import random_resized_crop
from sslbook.losses import masked_cross_entropy, pretext_cross_entropy
from sslbook.methods.base import Method, check_labelled_batch
from sslbook.methods.rotnet import ANGLES, rotate_batch


def s4l_loss(sup_loss: torch.Tensor, self_loss: torch.Tensor, weight: float) -> torch.Tensor:
    """S4L's objective: L = L_sup + w · L_self."""
    return sup_loss + weight * self_loss


class S4LRotation(Method):
    name = "s4l_rotation"
    uses_labels = True

    def __init__(
        self,
        backbone,
        info,
        image_size,
        weight=1.0,
        all_rotations=True,
        crop_scale=(0.35, 1.0),
        labelled_batch=0,
        classify_rotated=True,
    ):
        super().__init__(backbone, info, image_size)
        self.labelled_batch_size = check_labelled_batch(self.name, labelled_batch)
        if weight < 0:
            raise ValueError(f"s4l_rotation's weight w must be >= 0, got {weight}")
        self.weight = float(weight)
        self.all_rotations = bool(all_rotations)
        self.classify_rotated = bool(classify_rotated)
        self.crop_scale = tuple(crop_scale)
        d = backbone.out_dim
        self.classifier = nn.Linear(d, info.num_classes)  # the semi-supervised classifier
        self.rotation_head = nn.Linear(d, len(ANGLES))  # the self-supervised head

    @torch.no_grad()
    def make_views(self, images, labels):
        x = random_resized_crop(images, self.image_size, self.crop_scale, flip_p=0.5)  # N×3×H×W
        rotated, targets = rotate_batch(x)  # (4N)×3×H×W grouped by angle; rows 0…N−1 upright
        if self.all_rotations:
            return {"images": rotated, "targets": targets}
        n = x.shape[0]
        pick = torch.randint(0, len(ANGLES), (n,), device=x.device) * n + torch.arange(n, device=x.device)
        return {"images": torch.cat([x, rotated[pick]]), "targets": targets[pick]}

    def forward(self, views, labels):
        images, targets = views["images"], views["targets"]
        features = self.backbone(images)
        class_logits = self.classifier(features)  # every copy: its image's label (−1: unlabelled)
        class_labels = labels.repeat(len(images) // labels.shape[0])  # copies are grouped: copy k is rows k·N…
        if not self.classify_rotated:  # the classifier on the upright copies (rows 0…N−1) only
            class_labels[labels.shape[0] :] = -1
        rotation_logits = self.rotation_head(features[len(images) - len(targets) :])
        sup = masked_cross_entropy(class_logits, class_labels)
        self_loss = pretext_cross_entropy(rotation_logits, targets)
        labelled = class_labels >= 0
        acc = ((class_logits.argmax(1) == class_labels) & labelled).sum() / labelled.sum().clamp_min(1)
        return {
            "loss": s4l_loss(sup, self_loss, self.weight),
            "sup_loss": sup,
            "self_loss": self_loss,
            "acc": acc,
            "pretext_acc": (rotation_logits.argmax(1) == targets).float().mean(),
        }

    def classify(self, images):
        return self.classifier(self.backbone(images))

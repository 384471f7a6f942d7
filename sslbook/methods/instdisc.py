"""Instance discrimination with a memory bank (Wu, Xiong, Yu & Lin 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination").

"We treat each image instance as a distinct class of its own": with n training images there are n
classes, and the "weight" of class i is not a parameter but the stored feature v̄ᵢ of image i, kept in a
**memory bank** of all n (128-d, unit) features. A batch image x_i (one augmented view) is encoded to
v = normalise(f(x_i)) and classified against its own slot v̄ᵢ among K negatives **sampled from the bank**
(a non-parametric softmax with temperature τ = 0.07; we use its InfoNCE form). After the step the slot
is refreshed by momentum: v̄ᵢ ← normalise(m·v̄ᵢ + (1 − m)·v), m = 0.5.

The bank is indexed by the image's position in the training set, so ``make_views`` takes ``indices``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslbook.augment import ViewRecipe
from sslbook.losses import info_nce
from sslbook.methods.base import Method
from sslbook.methods.momentum import MemoryBank, check_temperature
from sslbook.models.heads import head


class InstDisc(Method):
    name = "instdisc"
    needs_indices = True  # make_views(images, labels, indices=...): the dataset index of every image

    def __init__(
        self,
        backbone,
        info,
        image_size,
        bank_size=50000,
        num_negatives=4096,
        temperature=0.07,
        bank_momentum=0.5,
        dim=128,
        crop_scale=(0.2, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.4),
    ):
        super().__init__(backbone, info, image_size)
        self.temperature = check_temperature(self.name, temperature)
        if not (isinstance(num_negatives, int) and num_negatives > 0):
            raise ValueError(
                f"{self.name} needs num_negatives > 0 (negatives drawn from the bank), got {num_negatives!r}"
            )
        self.num_negatives = num_negatives
        self.projector = head([(backbone.out_dim, dim, False, False)])  # "the fc layer ... to 128-d"
        self.bank = MemoryBank(int(bank_size), dim, bank_momentum)
        # the paper's code: random resized crop, ColorJitter(0.4, 0.4, 0.4, 0.4), grayscale p = 0.2, flip
        self.recipe = ViewRecipe(size=image_size, scale=tuple(crop_scale), jitter=tuple(jitter), jitter_p=1.0)

    @torch.no_grad()
    def make_views(self, images, labels, indices=None):
        indices = self.bank.check_index(indices, self.name)
        return {"x": self.recipe(images), "index": indices.to(images.device)}  # x: N×3×s×s, index: N

    def forward(self, views, labels):
        if not isinstance(views, dict) or "index" not in views:
            raise ValueError(f"{self.name} needs the views made by its make_views(images, labels, indices=...)")
        x, index = views["x"], self.bank.check_index(views["index"], self.name)
        v = self.projector(self.backbone(x))  # N×D
        positives = self.bank.get(index)  # N×D: each image's own slot v̄ᵢ
        negatives = self.bank.sample(self.num_negatives)  # K×D, random slots
        loss = info_nce(v, positives, negatives=negatives, temperature=self.temperature)
        if self.training:
            self.bank.update(index, v)  # v̄ᵢ ← normalise(m v̄ᵢ + (1 − m) v)
        with torch.no_grad():
            pos = (F.normalize(v.float(), dim=1) * positives).sum(1).mean()
        return {"loss": loss, "pos_sim": pos}

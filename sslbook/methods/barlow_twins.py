"""Barlow Twins: self-supervised learning via redundancy reduction (Zbontar et al. 2021).

"The objective function measures the cross-correlation matrix between the embeddings of two identical
networks fed with distorted versions of a batch of samples, and tries to make this matrix close to
the identity."

    z1, z2 = g(f(x1)), g(f(x2))        # N×D each, a wide projector (8192 at full scale)
    loss   = barlow_twins(z1, z2, λ)    # Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²

``reduction="mean"`` replaces the sums by means (λ becomes 1/(D − 1); the variant of a 2021 Zhihu blog post,
"最简单的self-supervised方法": see :func:`sslbook.losses.barlow_twins` for where it differs from λ = 5e-3).

``jitter`` (brightness, contrast, saturation, hue) and ``gray_p`` set the colour augmentation of both views
(default: SimCLR's, as in :class:`sslbook.augment.ViewRecipe`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslbook.augment import asymmetric_pair
from sslbook.losses import barlow_twins
from sslbook.methods.base import Method, check_pair
from sslbook.models.heads import head


class BarlowTwins(Method):
    name = "barlow_twins"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        proj_dim=8192,
        lambd=5e-3,
        reduction="sum",
        blur_p=(1.0, 0.1),
        solarize_p=(0.0, 0.2),
        crop_scale=(0.08, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),
        gray_p=0.2,
    ):
        super().__init__(backbone, info, image_size)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if lambd < 0:
            raise ValueError(f"lambd must be ≥ 0, got {lambd}")
        d = backbone.out_dim
        # "The projector network has three linear layers, each with 8192 output units. The first two layers
        #  of the projector are followed by a batch normalization layer and rectified linear units."
        self.projector = head(
            [(d, proj_dim, True, True), (proj_dim, proj_dim, True, True), (proj_dim, proj_dim, False, False)]
        )
        self.lambd, self.reduction = lambd, reduction
        self.recipes = asymmetric_pair(image_size, crop_scale, blur_p, solarize_p, jitter, gray_p)

    @torch.no_grad()
    def make_views(self, images, labels):
        return [recipe(images) for recipe in self.recipes]

    def forward(self, views, labels):
        v1, v2 = check_pair(self.name, views)
        z1, z2 = self.projector(self.backbone(torch.cat([v1, v2]))).chunk(2)  # N×D each
        # z_std: the collapse monitor the other methods of chapter 8 log (≈ 1/√D healthy, 0 collapsed)
        return {
            "loss": barlow_twins(z1, z2, self.lambd, self.reduction),
            "z_std": F.normalize(z1.detach().float(), dim=1).std(0).mean(),
        }

"""SimSiam: exploring simple Siamese representation learning (Chen & He 2021).

"Our hypothesis is that the stop-gradient operation plays an essential role in preventing collapsing."

    z1, z2 = h(f(x1)), h(f(x2))            # encoder f (backbone + projector h), one network for both views
    p1, p2 = pred(z1), pred(z2)             # predictor: an MLP bottleneck
    loss = D(p1, stopgrad(z2))/2 + D(p2, stopgrad(z1))/2,   D = negative cosine

No negatives and no momentum encoder. The switches ``predictor`` and ``stop_gradient`` remove either
ingredient so a chapter can show the collapse (the std of the normalised outputs goes to 0), and
``predictor_fixed_lr`` keeps the predictor's learning rate at its peak instead of decaying it, as the
paper does, and ``predictor_lr_scale`` multiplies it (the paper: 1; Tian, Chen & Ganguli 2021 show that
a predictor adapting faster than the encoder helps these dynamics, and in a run of a few hundred steps a
10× rate is what lifts SimSiam above its random initialisation: see the tiny recipe in
:mod:`sslbook.config`).

``jitter`` (brightness, contrast, saturation, hue) and ``gray_p`` set the colour augmentation of both views
(default: SimCLR's, as in :class:`sslbook.augment.ViewRecipe`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.augment import ViewRecipe
from sslbook.losses import negative_cosine
from sslbook.methods.base import Method, check_pair
from sslbook.models.heads import head


class SimSiam(Method):
    name = "simsiam"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        proj_dim=2048,
        pred_hidden=512,
        predictor=True,
        stop_gradient=True,
        predictor_fixed_lr=True,
        crop_scale=(0.2, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),
        gray_p=0.2,
        predictor_lr_scale=1.0,
    ):
        super().__init__(backbone, info, image_size)
        if not predictor_lr_scale > 0:
            raise ValueError(f"predictor_lr_scale must be > 0, got {predictor_lr_scale}")
        d = backbone.out_dim
        # CIFAR: "the projection MLP has 2 layers", BN on every layer including the output
        self.projector = head([(d, proj_dim, True, True), (proj_dim, proj_dim, True, False)])
        # "The prediction MLP has BN applied to its hidden fc layers ... its output fc does not have BN
        #  or ReLU. This MLP has 2 layers", a bottleneck: hidden size 1/4 of the output
        self.predictor = (
            head([(proj_dim, pred_hidden, True, True), (pred_hidden, proj_dim, False, False)])
            if predictor
            else nn.Identity()
        )
        # Method.fixed_lr and Method.lr_scale on the predictor's parameters, read by sslbook.optim.param_groups
        self.set_lr(self.predictor, lr_scale=predictor_lr_scale, fixed_lr=predictor_fixed_lr)
        self.stop_gradient = stop_gradient
        self.recipe = ViewRecipe(size=image_size, scale=tuple(crop_scale), jitter=tuple(jitter), gray_p=gray_p)

    @torch.no_grad()
    def make_views(self, images, labels):
        return [self.recipe(images), self.recipe(images)]

    def forward(self, views, labels):
        v1, v2 = check_pair(self.name, views)
        z1, z2 = self.projector(self.backbone(torch.cat([v1, v2]))).chunk(2)  # N×proj_dim each
        p1, p2 = self.predictor(z1), self.predictor(z2)
        if self.stop_gradient:
            loss = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2  # negative_cosine detaches z
        else:  # the ablation: gradients flow into both branches
            loss = (
                -(
                    F.cosine_similarity(p1.float(), z2.float(), dim=1).mean()
                    + F.cosine_similarity(p2.float(), z1.float(), dim=1).mean()
                )
                / 2
            )
        # the paper's collapse monitor: per-dimension std of the l2-normalised output (≈ 1/√d when healthy, 0 collapsed)
        return {"loss": loss, "z_std": F.normalize(z1.detach().float(), dim=1).std(0).mean()}

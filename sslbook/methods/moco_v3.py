"""MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers").

No queue: "we use the keys that naturally co-exist in the same batch", large batches instead. The query
encoder is backbone → projection MLP → **prediction** MLP, the momentum encoder is backbone → projection
MLP (BN in every hidden layer of both MLPs), the momentum follows a cosine schedule from m₀ (0.99) to 1,
and the loss is **symmetrised**: ctr(q₁, k₂) + ctr(q₂, k₁), each an InfoNCE over the batch (keys of
every process) scaled by 2τ. The backbone is anything with ``out_dim``: the tiny convnet, a ResNet or
a ViT (the paper's main subject).
"""

from __future__ import annotations

import torch
from torch import nn

from sslbook.augment import ViewRecipe
from sslbook.losses import info_nce
from sslbook.methods.base import Method, check_pair
from sslbook.methods.momentum import check_temperature
from sslbook.models.ema import ema_update_, momentum_copy
from sslbook.models.heads import head
from sslbook.schedules import cosine_momentum


class MoCoV3(Method):
    name = "moco_v3"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        momentum=0.99,
        temperature=0.2,
        dim=256,
        mlp_hidden=4096,
        momentum_schedule="cosine",
        crop_scale=(0.08, 1.0),
        blur_p=(1.0, 0.1),
        solarize_p=(0.0, 0.2),
    ):
        super().__init__(backbone, info, image_size)
        self.temperature = check_temperature(self.name, temperature)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{self.name} needs a momentum m in [0, 1], got {momentum}")
        if momentum_schedule not in ("cosine", "constant"):
            raise ValueError(f"momentum_schedule must be 'cosine' or 'constant', got {momentum_schedule!r}")
        self.momentum, self.momentum_schedule = float(momentum), momentum_schedule
        d, h = backbone.out_dim, mlp_hidden
        # "The projection head is a 3-layer MLP ... the prediction head is a 2-layer MLP ... BN in all
        # hidden layers (and the output of the projection)"
        self.projector = head([(d, h, True, True), (h, h, True, True), (h, dim, True, False)])
        self.predictor = head([(dim, h, True, True), (h, dim, False, False)])
        self.encoder_k = momentum_copy(nn.Sequential(backbone, self.projector))  # backbone + projector, no predictor
        # BYOL's asymmetric augmentations, as MoCo v3 uses them: blur 1.0 / 0.1, solarisation 0 / 0.2
        self.recipes = [
            ViewRecipe(
                size=image_size,
                scale=tuple(crop_scale),
                jitter=(0.4, 0.4, 0.2, 0.1),
                gray_p=0.2,
                blur_p=b,
                solarize_p=s,
            )
            for b, s in zip(blur_p, solarize_p)
        ]

    @torch.no_grad()
    def make_views(self, images, labels):
        return [r(images) for r in self.recipes]  # x1, x2: N×3×s×s

    def forward(self, views, labels):
        x1, x2 = check_pair(self.name, views)
        q1, q2 = (self.predictor(self.projector(self.backbone(x))) for x in (x1, x2))  # N×C each (BN per view)
        with torch.no_grad():
            k1, k2 = self.encoder_k(x1), self.encoder_k(x2)  # N×C keys, no gradient
        # negatives=None: the other keys of the (global) batch; ×2τ as in the paper's code
        loss = (
            2 * self.temperature * (info_nce(q1, k2, None, self.temperature) + info_nce(q2, k1, None, self.temperature))
        )
        return {"loss": loss}

    def momentum_at(self, step: int, total_steps: int) -> float:
        if self.momentum_schedule == "cosine":
            return cosine_momentum(step, total_steps, self.momentum)
        return self.momentum

    def on_step_end(self, step, total_steps):
        m = self.momentum_at(step, total_steps)
        ema_update_(self.encoder_k, nn.Sequential(self.backbone, self.projector), m)
        return {"momentum": m}

"""BYOL: Bootstrap Your Own Latent (Grill et al. 2020).

"From an augmented view of an image, we train the online network to predict the target network
representation of the same image under a different augmented view. At the same time, we update the
target network with a slow-moving average of the online network."

    online:  y = f_θ(v),   z = g_θ(y),   p = q_θ(z)
    target:  y' = f_ξ(v'), z' = g_ξ(y')                    (no gradient; ξ ← τ·ξ + (1 − τ)·θ each step)
    loss  =  ‖p̄ − z̄'‖² + ‖p̄' − z̄‖²  =  2 · (2 + 2·negative_cosine)   (symmetrised, averaged over the batch)

τ follows a cosine from ``base_momentum`` to 1 over training (the paper: 0.996 → 1).
No negatives: what prevents collapse is the predictor and the slowly moving target.

``predictor_lr_scale`` multiplies the predictor's learning rate (the paper: 1). Tian, Chen & Ganguli
(2021) show that the predictor must adapt faster than the encoder for the non-contrastive dynamics to
escape their start; in a run of a few hundred steps a 10× rate is what lets BYOL beat its random
initialisation (the tiny recipe in :mod:`sslbook.config` records the measurements).

``jitter`` (brightness, contrast, saturation, hue) and ``gray_p`` set the colour augmentation of both views
(default: SimCLR's, as in :class:`sslbook.augment.ViewRecipe`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslbook.augment import asymmetric_pair
from sslbook.losses import alignment, negative_cosine, uniformity
from sslbook.methods.base import Method, check_pair
from sslbook.models.ema import ema_update_, momentum_copy
from sslbook.models.heads import head
from sslbook.schedules import cosine_momentum


class BYOL(Method):
    name = "byol"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        proj_dim=256,
        hidden_dim=4096,
        base_momentum=0.996,
        blur_p=(1.0, 0.1),
        solarize_p=(0.0, 0.2),
        crop_scale=(0.08, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),
        gray_p=0.2,
        predictor_lr_scale=1.0,
    ):
        super().__init__(backbone, info, image_size)
        if not 0.0 <= base_momentum <= 1.0:
            raise ValueError(f"base_momentum must be in [0, 1], got {base_momentum}")
        if not predictor_lr_scale > 0:
            raise ValueError(f"predictor_lr_scale must be > 0, got {predictor_lr_scale}")
        d = backbone.out_dim
        # "a multi-layer perceptron with a hidden layer of size 4096 followed by batch normalization,
        #  rectified linear units, and a final linear layer with output dimension 256" (projector and predictor)
        self.projector = head([(d, hidden_dim, True, True), (hidden_dim, proj_dim, False, False)])
        self.predictor = head([(proj_dim, hidden_dim, True, True), (hidden_dim, proj_dim, False, False)])
        self.set_lr(self.predictor, lr_scale=predictor_lr_scale)  # Method.lr_scale, read by sslbook.optim.param_groups
        self.target_backbone = momentum_copy(backbone)
        self.target_projector = momentum_copy(self.projector)
        self.base_momentum = base_momentum
        self.momentum = base_momentum
        # The paper's two asymmetric views: blur always in the first, rarely in the second; solarise only
        # in the second. At 32 px the recipes set blur_p to 0.
        self.recipes = asymmetric_pair(image_size, crop_scale, blur_p, solarize_p, jitter, gray_p)

    @torch.no_grad()
    def make_views(self, images, labels):
        return [recipe(images) for recipe in self.recipes]

    def forward(self, views, labels):
        v1, v2 = check_pair(self.name, views)
        both = torch.cat([v1, v2])  # one pass for both views: 2N×3×H×W
        y = self.projector(self.backbone(both))  # the online projections, 2N×proj_dim
        p1, p2 = self.predictor(y).chunk(2)  # N×proj_dim each
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_backbone(both)).chunk(2)
        # ‖p̄ − z̄‖² = 2 + 2·negative_cosine(p, z); symmetric over the two views
        loss = (2 + 2 * negative_cosine(p1, z2)) + (2 + 2 * negative_cosine(p2, z1))
        with torch.no_grad():  # measurements (Wang & Isola 2020; RAFT, Shi et al. 2020), no part of the loss
            y1, y2 = y.detach().chunk(2)
            measured = {
                "align": alignment(y1, y2),  # the online projections of the two views
                "uniform": uniformity(y1),  # … and how they spread over the sphere
                "align_pred": alignment(p1.detach(), p2.detach()),  # RAFT's alignment term, after the predictor
                "cross_model": alignment(p1.detach(), z1),  # RAFT's cross-model term: the same view's prediction
            }  # and target, the distance RAFT maximises ("run away from the teacher")
        return {"loss": loss, "z_std": F.normalize(z1.float(), dim=1).std(0).mean(), **measured}

    def on_step_end(self, step, total_steps):
        # τ_k = 1 − (1 − τ_base)(cos(πk/K) + 1)/2, i.e. a cosine from τ_base to 1 (shared with MoCo v3)
        self.momentum = cosine_momentum(step, total_steps, self.base_momentum)
        ema_update_(self.target_backbone, self.backbone, self.momentum)
        ema_update_(self.target_projector, self.projector, self.momentum)
        return {"momentum": self.momentum}

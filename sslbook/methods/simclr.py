"""SimCLR: a simple framework for contrastive learning of visual representations (Chen et al. 2020).

"We learn representations by maximizing agreement between differently augmented views of the same
data example via a contrastive loss in the latent space." Each image gives two views
x̃ᵢ = t(x), x̃ⱼ = t'(x) by random resized crop, flip, colour distortion and grayscale (blur on large
images); an encoder f gives h = f(x̃) (the representation kept and evaluated), a small projection
head g gives z = g(h), and NT-Xent (:func:`sslbook.losses.nt_xent`) makes each z recognise its twin
among the 2N − 2 other views of the batch (of every process under torchrun)::

    x ──t──▶ x̃ᵢ ──f──▶ hᵢ ──g──▶ zᵢ ─┐
      └─t'─▶ x̃ⱼ ──f──▶ hⱼ ──g──▶ zⱼ ─┴─▶ NT-Xent(zᵢ, zⱼ; τ)

The head is thrown away after training: "it is beneficial to define the contrastive loss on z, but
to use h as the representation" (section 4.2).
"""

from __future__ import annotations

import torch
from torch import nn

from sslbook.augment import ViewRecipe
from sslbook.losses import nt_xent
from sslbook.methods.base import Method, check_pair
from sslbook.models.heads import head

PROJECTIONS = ("mlp", "linear", "none")


def projection_head(kind: str, d: int, out_dim: int = 128) -> nn.Module:
    """SimCLR's g(·). "We use a MLP with one hidden layer to obtain z = g(h) = W⁽²⁾σ(W⁽¹⁾h)" with a
    d-dimensional hidden layer and a 128-dimensional output (section 2, appendix B.9); BN after the hidden
    layer as in the released code. ``linear``: z = W h; ``none``: z = h (the ablation of Figure 8)."""
    if kind == "mlp":
        return head([(d, d, True, True), (d, out_dim, False, False)])
    if kind == "linear":
        return head([(d, out_dim, False, False)])
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"simclr projection must be one of {PROJECTIONS}, got {kind!r}")


class SimCLR(Method):
    """Two augmented views, encoder + projection head, NT-Xent. ``self.backbone`` (h, before the head)
    is the representation the evaluation protocols measure.

    Args (``method_kwargs``):
        temperature: τ of NT-Xent (> 0); 0.5 is the paper's CIFAR-10 value.
        projection: ``mlp`` | ``linear`` | ``none``; proj_dim: the output size of g (128).
        crop_scale, crop_ratio, flip_p: random resized crop area and aspect ranges (scale = ratio = (1, 1):
            no crop) and horizontal-flip probability.
        jitter_strength, jitter_p: colour distortion strength s (brightness, contrast, saturation 0.8s,
            hue 0.2s; s = 0.5 on CIFAR, 1.0 on ImageNet) and its probability.
        gray_p, blur_p: random grayscale and Gaussian blur probabilities (blur only on large images).
    """

    name = "simclr"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        temperature: float = 0.5,
        projection: str = "mlp",
        proj_dim: int = 128,
        crop_scale=(0.08, 1.0),
        crop_ratio=(3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter_strength: float = 0.5,
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        blur_p: float = 0.0,
    ):
        super().__init__(backbone, info, image_size)
        if not temperature > 0:
            raise ValueError(
                f"simclr needs a temperature > 0 (the paper uses 0.5 on CIFAR-10, 0.1 on ImageNet), got {temperature}"
            )
        lo, hi = crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"simclr crop_scale must satisfy 0 < low <= high <= 1, got {tuple(crop_scale)}")
        self.temperature = float(temperature)
        self.projector = projection_head(projection, backbone.out_dim, proj_dim)
        s = float(jitter_strength)
        # t ~ T: one random view per image, parameters drawn per sample (N×3×H×W → N×3×s×s); the blur's σ
        # range is ViewRecipe's (0.1, 2.0) px, the paper's
        self.recipe = ViewRecipe(
            size=image_size,
            scale=(float(lo), float(hi)),
            ratio=tuple(map(float, crop_ratio)),
            flip_p=float(flip_p),
            jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s),
            jitter_p=float(jitter_p) if s > 0 else 0.0,
            gray_p=float(gray_p),
            blur_p=float(blur_p),
        )

    @torch.no_grad()
    def make_views(self, images, labels):
        """images: N×3×H×W in [0, 1] → [x̃ᵢ, x̃ⱼ], two independently augmented N×3×s×s views."""
        return [self.recipe(images), self.recipe(images)]

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: N×3×s×s → (h: N×D before the head, z: N×proj_dim after it)."""
        h = self.backbone(x)
        return h, self.projector(h)

    def forward(self, views, labels=None):
        x1, x2 = check_pair(self.name, views)
        n = x1.shape[0]
        h, z = self.embed(torch.cat([x1, x2]))  # one pass over 2N views: BN sees both
        z1, z2 = z[:n], z[n:]  # N×d each, row i of z1 and z2: a positive pair
        loss = nt_xent(z1, z2, self.temperature)
        with torch.no_grad():  # how often the twin is the most similar of the 2N − 1 other views
            zn = nn.functional.normalize(z.float(), dim=1)
            sim = zn @ zn.T
            sim.fill_diagonal_(float("-inf"))
            twin = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(sim.device)
            acc = (sim.argmax(1) == twin).float().mean()
        return {"loss": loss, "pos_top1": acc}

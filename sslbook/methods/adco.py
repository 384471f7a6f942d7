"""AdCo: Adversarial Contrast (Hu, Wang, Hu & Qi, CVPR 2021, "AdCo: Adversarial Contrast for Efficient
Learning of Unsupervised Representations from Self-Trained Negative Adversaries").

MoCo keeps its negatives in a queue of past keys: only the newest batch of them reflects the current
encoder. AdCo instead makes the negatives **learnable**: a matrix W of M unit vectors, the "negative
adversaries", trained *against* the encoder. The two players of one min-max game::

    min_θ max_W  L(θ, W),   L = −log e^{q·k/τ} / (e^{q·k/τ} + Σ_m e^{q·w_m/τ})

The encoder θ descends the contrastive loss as in MoCo v2 (query encoder with an MLP head, momentum key
encoder, shuffled BN); the negatives ascend it, and the paper shows that their ascent moves each w_m
towards a weighted combination of the queries that find it most similar: they track the current
representation as a whole rather than through a queue. The negatives' update uses its own, sharper
temperature τ_n and its own learning rate.

**Two optimisers.** The encoder is trained by the run's optimiser, like every method. The negatives are
not parameters of it: they are a buffer that the method moves itself after each step, by SGD with
momentum *up* their loss, as the official code does (``negatives_lr``, ``negatives_momentum``), and are
renormalised to unit length. The reason is the size of their gradient: an adversary far from every query
gets almost no softmax weight at τ_n and should barely move, while one that a query finds close should
move a lot. SGD's step is proportional to the gradient; an adaptive optimiser (Adam) moves every
adversary at about its full rate whatever its gradient, which makes the game either a chase (a high rate:
the adversaries sit on the queries and the positives lose) or no game (a low one: the encoder pulls away
and the adversaries' loss falls to zero). The ascent direction is computed in closed form by
:func:`sslbook.losses.adversarial_contrast` (the p-weighted mean of the queries closest to each adversary).

**Where the adversaries start.** Random unit vectors would start the game without a move for the
adversaries: at τ_n = 0.02 a random negative is so much less similar to a query than its positive that
the softmax gives it no weight, and its gradient is zero (at initialisation the adversaries' loss prints
as 0.0). So they start on the representation: after each of the first M / B training steps that
batch's keys (of every process, under torchrun) are written into the rows not yet written, as MoCo's
queue fills (after the step's loss, so no query meets its own key as a negative); from then on only
gradient ascent moves them.

``symmetric=True`` uses each view as the query of the other's key as well (the paper's
symmetric variant), which doubles the encoder's work per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslbook import distributed as dist
from sslbook.augment import ViewRecipe
from sslbook.losses import adversarial_contrast
from sslbook.methods.base import Method, check_pair
from sslbook.methods.momentum import check_temperature, shuffled_bn_forward
from sslbook.models.ema import ema_update_, momentum_copy
from sslbook.models.heads import head


class AdCo(Method):
    name = "adco"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        num_negatives=65536,
        momentum=0.999,
        temperature=0.12,
        negative_temperature=0.02,
        negatives_lr=3.0,
        negatives_momentum=0.9,
        dim=128,
        mlp_hidden=2048,
        symmetric=False,
        bn_splits=8,
        crop_scale=(0.2, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_p=0.8,
        gray_p=0.2,
        blur_p=0.5,
    ):
        super().__init__(backbone, info, image_size)
        self.temperature = check_temperature(self.name, temperature)
        self.negative_temperature = check_temperature(self.name, negative_temperature)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{self.name} needs a momentum m in [0, 1], got {momentum}")
        if not (isinstance(num_negatives, int) and num_negatives > 0):
            raise ValueError(f"{self.name} needs a positive integer number of negatives, got {num_negatives!r}")
        if not negatives_lr > 0:
            raise ValueError(f"{self.name} needs negatives_lr > 0, got {negatives_lr}")
        if not 0.0 <= negatives_momentum < 1.0:
            raise ValueError(f"{self.name} needs negatives_momentum in [0, 1), got {negatives_momentum}")
        self.momentum = float(momentum)
        self.symmetric = bool(symmetric)
        self.bn_splits = int(bn_splits)
        d = backbone.out_dim
        self.projector = head([(d, mlp_hidden, False, True), (mlp_hidden, dim, False, False)])
        self.encoder_k = momentum_copy(nn.Sequential(backbone, self.projector))
        self.encoder_k.keep_local_bn = True  # shuffled BN needs per-process statistics (as in MoCo)
        self.negatives_lr, self.negatives_momentum = float(negatives_lr), float(negatives_momentum)
        # the negative adversaries: M unit vectors, moved up their loss by the method's own SGD (on_step_end)
        self.register_buffer("negatives", F.normalize(torch.randn(num_negatives, dim), dim=1))
        self.register_buffer("velocity", torch.zeros(num_negatives, dim))  # their SGD momentum
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # rows written with keys so far
        self.recipe = ViewRecipe(
            size=image_size,
            scale=tuple(crop_scale),
            flip_p=0.5,
            jitter=tuple(jitter),
            jitter_p=jitter_p,
            gray_p=gray_p,
            blur_p=blur_p,
        )

    @torch.no_grad()
    def make_views(self, images, labels):
        return [self.recipe(images), self.recipe(images)]

    def _keys(self, x):
        with torch.no_grad():
            return shuffled_bn_forward(self.encoder_k, x, self.bn_splits if self.training else 1)

    @torch.no_grad()
    def fill(self, keys: torch.Tensor) -> None:
        """Write the keys (of every process) into the negatives' rows not yet written (see the module's text)."""
        start, m = int(self.filled), self.negatives.shape[0]
        if start >= m:
            return
        keys = F.normalize(dist.all_gather(keys.detach().float()), dim=1)[: m - start]
        self.negatives[start : start + keys.shape[0]] = keys.to(self.negatives.dtype)
        self.filled.fill_(start + keys.shape[0])

    def forward(self, views, labels):
        x1, x2 = check_pair(self.name, views)
        pairs = [(x1, x2), (x2, x1)] if self.symmetric else [(x1, x2)]
        keys = [self._keys(x_k) for _, x_k in pairs]  # N×C keys, no gradient
        playing = int(self.filled) >= self.negatives.shape[0]  # the game starts once every row holds a key
        if self.training and not playing:
            self._unwritten = keys  # written by on_step_end, after this step's loss (as MoCo enqueues)
        loss, adv, pos, ascent = 0.0, 0.0, 0.0, 0.0
        for (x_q, _), k in zip(pairs, keys):
            q = self.projector(self.backbone(x_q))  # N×C queries
            term, a, g = adversarial_contrast(q, k, self.negatives, self.temperature, self.negative_temperature)
            loss, adv, ascent = loss + term / len(pairs), adv + a / len(pairs), ascent + g / len(pairs)
            with torch.no_grad():
                pos = pos + (F.normalize(q.float(), dim=1) * F.normalize(k.float(), dim=1)).sum(1).mean() / len(pairs)
        if self.training and playing:
            self._ascent = ascent  # applied by on_step_end, after the encoder's step (as the official code)
        return {"loss": loss, "adversary_loss": adv, "pos_sim": pos}

    @torch.no_grad()
    def ascend(self, ascent: torch.Tensor) -> None:
        """One SGD-with-momentum step of the negatives up their loss (``ascent`` averaged over processes),
        then back onto the unit sphere."""
        self.velocity.mul_(self.negatives_momentum).add_(dist.all_reduce_mean(ascent.float()))
        self.negatives.add_(self.negatives_lr * self.velocity)
        self.negatives.copy_(F.normalize(self.negatives, dim=1))

    def on_step_end(self, step, total_steps):
        ema_update_(self.encoder_k, nn.Sequential(self.backbone, self.projector), self.momentum)
        ascent = self.__dict__.pop("_ascent", None)
        if ascent is not None:
            self.ascend(ascent)
        for k in self.__dict__.pop("_unwritten", []):
            self.fill(k)
        return {"momentum": self.momentum}

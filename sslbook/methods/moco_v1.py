"""MoCo v1: Momentum Contrast (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation
Learning").

"We build a dynamic dictionary with a queue and a moving-averaged encoder." Contrastive learning is a
dictionary look-up: a query q = f_q(x_q) must match its key k₊ = f_k(x_k) (another view of the same
image) among K negative keys. The keys of past batches are kept in a FIFO **queue**, which decouples the
dictionary size K from the batch size; the key encoder is a **momentum** copy of the query encoder,
θk ← m·θk + (1 − m)·θq, so the keys in the queue stay consistent although they were computed at
different steps. Only θq receives gradients. **Shuffled BN** stops the query and its key from
communicating through batch statistics. Loss: InfoNCE over 1 + K classes with temperature τ (eq. 1).

v1: a linear 128-d head (the backbone's fc), τ = 0.07, m = 0.999, K = 65536.

Under ``torchrun --nproc_per_node=K`` every process encodes its B/K queries with BN over those B/K
(per-process BN, as in the paper's 8-GPU runs), its share of the shuffled keys likewise, and enqueues
the keys of all processes in rank order, so every process keeps the same queue. One process reproduces
that step exactly with ``bn_splits=K`` (the keys) and ``sslbook.distributed.split_batchnorm(method, K)``
(the queries; the key encoder is ``keep_local_bn`` and stays as it is); ``tests/test_distributed.py``
checks it. On one process the queries otherwise keep whole-batch BN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.augment import ViewRecipe
from sslbook.losses import info_nce
from sslbook.methods.base import Method, check_pair
from sslbook.methods.momentum import KeyQueue, check_temperature, shuffled_bn_forward
from sslbook.models.ema import ema_update_, momentum_copy
from sslbook.models.heads import head


class MoCoV1(Method):
    name = "moco_v1"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        queue_size=65536,
        momentum=0.999,
        temperature=0.07,
        dim=128,
        mlp_hidden=None,
        bn_splits=8,
        crop_scale=(0.2, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.4),
        jitter_p=1.0,
        gray_p=0.2,
        blur_p=0.0,
    ):
        super().__init__(backbone, info, image_size)
        self.temperature = check_temperature(self.name, temperature)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{self.name} needs a momentum m in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.bn_splits = int(bn_splits)
        d = backbone.out_dim
        # v1: "the output of the last fc layer (128-D)"; v2: "a 2-layer MLP head (hidden layer 2048-d, with ReLU)"
        layers = (
            [(d, mlp_hidden, False, True), (mlp_hidden, dim, False, False)] if mlp_hidden else [(d, dim, False, False)]
        )
        self.projector = head(layers)
        self.encoder_k = momentum_copy(nn.Sequential(backbone, self.projector))  # θk ← θq at the start
        # Its BN stays per process under sync_bn: global statistics would undo the shuffle (see shuffled_bn_forward).
        self.encoder_k.keep_local_bn = True
        self.queue = KeyQueue(int(queue_size), dim)
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
        return [self.recipe(images), self.recipe(images)]  # x_q, x_k: N×3×s×s each

    def forward(self, views, labels):
        x_q, x_k = check_pair(self.name, views)
        if self.training:
            from sslbook.distributed import world_size

            self.queue.check_batch(x_q.shape[0] * world_size())
        q = self.projector(self.backbone(x_q))  # N×C queries
        with torch.no_grad():
            k = shuffled_bn_forward(
                self.encoder_k, x_k, self.bn_splits if self.training else 1
            )  # N×C keys, no gradient
        loss = info_nce(q, k, negatives=self.queue.keys.clone(), temperature=self.temperature)  # (1+K)-way softmax
        with torch.no_grad():
            pos = (F.normalize(q.float(), dim=1) * F.normalize(k.float(), dim=1)).sum(1).mean()
        if self.training:
            self.queue.enqueue(k)  # enqueue the newest keys, dequeue the oldest
        return {"loss": loss, "pos_sim": pos}

    def momentum_at(self, step: int, total_steps: int) -> float:
        return self.momentum

    def on_step_end(self, step, total_steps):
        m = self.momentum_at(step, total_steps)
        ema_update_(self.encoder_k, nn.Sequential(self.backbone, self.projector), m)  # θk ← m θk + (1 − m) θq
        return {"momentum": m}

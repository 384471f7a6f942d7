"""MixMatch (Berthelot, Carlini, Goodfellow, Papernot, Oliver & Raffel, "MixMatch: A Holistic Approach to
Semi-Supervised Learning", NeurIPS 2019).

A classifier (a linear head on the backbone) trained on a few labels and many unlabelled images. Each step:

1. **Augment.** One augmented copy x̂ of each labelled image; K augmented copies û_1 … û_K of each unlabelled one.
2. **Guess labels.** q̄ = (1/K) Σ_k p_model(y | û_k), the model's softmax averaged over the K copies (no
   gradient), then **sharpened**: q = Sharpen(q̄, T) = q̄^{1/T} / Σ q̄^{1/T} (:func:`sslbook.losses.sharpen`),
   which lowers its entropy. Every copy û_k gets the same guess q.
3. **MixUp** (:func:`sslbook.augment.mixup`): W = Shuffle(Concat(X̂, Û)); the labelled items are mixed with the
   first |X̂| items of W, the unlabelled with the rest, images and label distributions alike, each item with
   its own λ' = max(λ, 1 − λ), λ ~ Beta(α, α) (so the mixed item stays closer to its own input).
4. **Loss.** L = L_X + λ_U · L_U: cross-entropy against the mixed labels on X', the squared L2 distance
   between the predicted and the mixed guessed distributions on U' (:func:`sslbook.losses.mixmatch_loss`).
   λ_U grows linearly from 0 over the first ``rampup_steps`` steps (:meth:`on_step_end`).

Labels reach the method for the labelled subset only (``label_fraction``; −1 elsewhere, see
:attr:`sslbook.methods.base.Method.uses_labels`). The paper draws a labelled and an unlabelled
batch of equal size each step: ``labelled_batch=B`` asks the trainer for B images of the labelled subset in front
of every batch (:attr:`sslbook.methods.base.Method.labelled_batch_size`; with 0 they come at the data's rate, and
with 1% of the labels the guesses collapse: see the recipe). X is every labelled row of the batch, U every row
(the labelled ones too, as unlabelled copies).

``ema_decay=m`` (> 0) keeps the paper's exponential moving average of the weights, θ̄ ← m·θ̄ + (1 − m)·θ after
every step (BatchNorm statistics copied), and :meth:`classify` (the classifier the paper evaluates) reads θ̄;
the frozen-feature protocols read ``backbone`` itself. Not reproduced: the paper's interleaving of the labelled
and unlabelled batches for BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.augment import horizontal_flip, mixup, mixup_lambda, random_crop
from sslbook.losses import mixmatch_loss, sharpen
from sslbook.methods.base import Method, check_labelled_batch
from sslbook.models.ema import ema_update_, momentum_copy


class MixMatch(Method):
    name = "mixmatch"
    uses_labels = True

    def __init__(
        self,
        backbone,
        info,
        image_size,
        k=2,
        temperature=0.5,
        alpha=0.75,
        lambda_u=75.0,
        rampup_steps=16000,
        crop_padding=4,
        labelled_batch=0,
        ema_decay=0.0,
    ):
        super().__init__(backbone, info, image_size)
        self.labelled_batch_size = check_labelled_batch(self.name, labelled_batch)
        if k < 1:
            raise ValueError(f"mixmatch needs k >= 1 augmentations of each unlabelled image, got {k}")
        if not temperature > 0 or not alpha > 0 or lambda_u < 0 or rampup_steps < 0 or not 0 <= ema_decay < 1:
            raise ValueError(
                "mixmatch needs temperature > 0, alpha > 0, lambda_u >= 0, rampup_steps >= 0 and 0 <= ema_decay < 1, "
                f"got {temperature}, {alpha}, {lambda_u}, {rampup_steps}, {ema_decay}"
            )
        self.k, self.temperature, self.alpha = int(k), float(temperature), float(alpha)
        self.lambda_u, self.rampup_steps, self.crop_padding = float(lambda_u), int(rampup_steps), crop_padding
        self.classifier = nn.Linear(backbone.out_dim, info.num_classes)
        self.ema_decay = float(ema_decay)
        # the averaged network the paper evaluates (a copy of backbone + classifier, no gradients), or None
        self.ema = momentum_copy(nn.Sequential(backbone, self.classifier)) if self.ema_decay > 0 else None
        # the ramped weight of L_U for the next step: a buffer, so a resumed run continues the ramp
        self.register_buffer("lambda_u_now", torch.tensor(0.0 if self.rampup_steps > 0 else self.lambda_u))

    def _augment(self, images):
        # the paper's augmentation for CIFAR-10: random horizontal flips and crops (reflect-padded by 4 px)
        return horizontal_flip(random_crop(images, self.crop_padding), 0.5)

    @torch.no_grad()
    def make_views(self, images, labels):
        """``{"x": N×3×H×W`` (one copy each, the labelled rows used), ``"u": (K·N)×3×H×W`` (K copies, grouped
        by copy: rows k·N … k·N+N−1 are copy k)``}``."""
        return {"x": self._augment(images), "u": torch.cat([self._augment(images) for _ in range(self.k)])}

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))

    def classify(self, images):
        """The evaluated classifier's logits: the moving average of the weights if ``ema_decay`` > 0."""
        return self.ema(images) if self.ema is not None else self.logits(images)

    def draw_mix(self, m: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """MixUp's random numbers for m items: the weights λ' (m) and the shuffle W of Concat(X̂, Û) (m indices)."""
        return mixup_lambda(m, self.alpha, device), torch.randperm(m, device=device)

    def forward(self, views, labels):
        x, u = views["x"], views["u"]
        labelled = labels >= 0
        n, c = labels.shape[0], self.info.num_classes
        with torch.no_grad():  # the guessed labels: average over the K copies, sharpened
            p = torch.softmax(self.logits(u).float(), dim=-1).view(self.k, n, c).mean(0)
            q = sharpen(p, self.temperature)
        x_hat = x[labelled]
        inputs = torch.cat([x_hat, u])
        targets = torch.cat([F.one_hot(labels[labelled], c).float(), q.repeat(self.k, 1)])
        lam, perm = self.draw_mix(len(inputs), inputs.device)
        mixed, mixed_targets = mixup(inputs, targets, lam, perm)
        logits = self.logits(mixed)
        nx = len(x_hat)
        loss, loss_x, loss_u = mixmatch_loss(
            logits[:nx], mixed_targets[:nx], logits[nx:], mixed_targets[nx:], self.lambda_u_now
        )
        return {"loss": loss, "loss_x": loss_x, "loss_u": loss_u, "guess_max": q.max(-1).values.mean()}

    def on_step_end(self, step: int, total_steps: int) -> dict[str, float]:
        done = step + 1  # optimiser steps taken; the next step's weight
        ramp = min(1.0, done / self.rampup_steps) if self.rampup_steps > 0 else 1.0
        self.lambda_u_now.fill_(self.lambda_u * ramp)
        if self.ema is not None:
            ema_update_(self.ema, nn.Sequential(self.backbone, self.classifier), self.ema_decay)
        return {"lambda_u": self.lambda_u * ramp}

"""DINO: self-distillation with no labels (Caron et al. 2021), with DINOv2's ingredients as options.

A **student** network g_θs = head ∘ backbone and a **teacher** g_θt of the same architecture. The
teacher is not trained by gradients: it is the exponential moving average of the student,
θt ← m·θt + (1 − m)·θs, with m following a cosine from 0.996 to 1 (Algorithm 1 of the paper)::

    gs, gt: student and teacher;  C: center (K);  tps, tpt: temperatures
    for x in loader:
        x1, x2 = augment(x), augment(x)               # two global views (+ local views for the student)
        s1, s2 = gs(x1), gs(x2)                       # student output N×K
        t1, t2 = gt(x1), gt(x2)                       # teacher output N×K
        loss = H(t1, s2)/2 + H(t2, s1)/2              # H(t, s) = −Σ softmax((t − C)/tpt) log softmax(s/tps)
        loss.backward(); update(gs)                   # SGD / AdamW on the student only
        gt.params = l·gt.params + (1 − l)·gs.params   # EMA teacher
        C = m·C + (1 − m)·cat([t1, t2]).mean(dim=0)   # centre

**Multi-crop**: the student sees 2 global crops (``image_size``) and ``n_local`` small crops
(``local_size``); the teacher sees the global crops only, so the student learns "local-to-global"
correspondences. Crops of the same size are concatenated and go through the network in **one**
forward pass (two passes for the student, one for the teacher).

**Collapse** is avoided by two opposite operations on the teacher's output: **centering** (subtract
C, a running mean of the teacher's logits) keeps one dimension from dominating but pushes towards the
uniform distribution; **sharpening** (a low teacher temperature, 0.04 → 0.07 after a linear warm-up)
pushes towards one-hot. ``centering=False`` collapses to one dimension (teacher entropy → 0),
``sharpening=False`` (teacher temperature = student temperature) to the uniform distribution
(entropy → log K).

The **head** (sec. 3.1 and App.): a 3-layer MLP (hidden 2048, GELU) to a 256-d bottleneck, ℓ2
normalisation, then a weight-normalised linear layer to K dimensions whose norm is fixed to 1
("norm_last_layer"); its weights can be frozen for the first steps (the paper: the first epoch).

DINOv2 (Oquab et al. 2023) ingredients, off by default:

- ``ibot_weight > 0``: iBOT's masked-image modelling. Some patches of the student's global crops are
  replaced by a learned mask token; a separate patch head maps each patch token to K' dimensions and
  the student predicts, at the masked positions, the teacher's (unmasked, centred, sharpened) patch
  distributions (:func:`sslbook.losses.ibot_patch_loss`), with a centre of its own. Needs a ViT.
- ``koleo_weight > 0``: the KoLeo regulariser on the student's [CLS] features of each global crop
  (:func:`sslbook.losses.koleo`), spreading the batch's features over the sphere.
- ``centering="sinkhorn"``: the teacher's targets are Sinkhorn–Knopp assignments
  (:func:`sslbook.losses.sinkhorn_knopp`, 3 iterations) instead of softmax((t − C)/τ).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sslbook import distributed as dist
from sslbook.augment import ViewRecipe
from sslbook.losses import dino_cross_entropy, ibot_patch_loss, koleo, sinkhorn_knopp
from sslbook.methods.base import Method, check_pair
from sslbook.models.ema import ema_update_, momentum_copy
from sslbook.schedules import cosine_momentum, teacher_temperature  # noqa: F401 (teacher_temperature: re-exported)


class DINOHead(nn.Module):
    """DINO's projection head: MLP → bottleneck → ℓ2-normalise → weight-normalised linear to K.

    "The projection head consists of a 3-layer multi-layer perceptron (MLP) with hidden dimension 2048
    followed by ℓ2 normalization and a weight normalized fully connected layer with K dimensions"
    (Caron et al. 2021, sec. 3.1). The last layer is w_k = g_k · v_k / ‖v_k‖ with no bias; with
    ``norm_last_layer=True`` the norms g_k are fixed to 1 (a buffer), which the paper's code found to
    stabilise training. x: N×D → N×K.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        if out_dim < 2 or nlayers < 1:
            raise ValueError(f"the DINO head needs out_dim ≥ 2 and nlayers ≥ 1, got {out_dim}, {nlayers}")
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(nlayers - 1):
            layers += [nn.Linear(d, hidden_dim), nn.GELU()]
            d = hidden_dim
        layers.append(nn.Linear(d, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_v = nn.Parameter(torch.empty(out_dim, bottleneck_dim))  # directions v_k: K×bottleneck
        nn.init.trunc_normal_(self.last_v, std=0.02)
        if norm_last_layer:
            self.register_buffer("last_g", torch.ones(out_dim, 1))  # norms fixed to 1
        else:
            self.last_g = nn.Parameter(torch.ones(out_dim, 1))
        self.out_dim = out_dim
        self.freeze_last = False  # set by the method during the first steps

    def last_weight(self) -> torch.Tensor:
        v = self.last_v
        if self.freeze_last:  # no gradient reaches v (a zero one, so DDP still sees the parameter used);
            v = v.detach() + 0.0 * v  # weight decay only rescales v, which the normalisation ignores
        return self.last_g * F.normalize(v, dim=1)  # K×bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1)  # N×bottleneck (or N×L×bottleneck), unit norm
        return F.linear(z, self.last_weight())  # N×K


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of probabilities p: …×K → …."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)


def random_patch_mask(
    n: int,
    num_patches: int,
    ratio: tuple[float, float] = (0.1, 0.5),
    prob: float = 0.5,
    device=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """iBOT / DINOv2's masks: each image is masked with probability ``prob``; a masked image hides a
    random fraction r ~ U(ratio) of its patches (at least one), chosen uniformly (DINOv2 masks random
    blocks; at 4×4 or 8×8 grids blocks and single patches hardly differ). Returns N×L bool, True = masked."""
    masked_image = torch.rand(n, device=device, generator=generator) < prob
    r = torch.rand(n, device=device, generator=generator) * (ratio[1] - ratio[0]) + ratio[0]
    count = (r * num_patches).round().clamp(min=1, max=num_patches - 1).long() * masked_image.long()  # N
    order = torch.rand(n, num_patches, device=device, generator=generator).argsort(dim=1).argsort(dim=1)  # random ranks
    return order < count[:, None]


def cls_attention_maps(backbone: nn.Module, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """A layer's attention of the [CLS] token to every patch, per head: N×heads×h×w.

    With ``layer=-1`` (the last block) these are the maps of DINO's Fig. 1 (the [CLS] query of the last block,
    one map per head). x: N×3×H×W in [0, 1]; the backbone must be a ViT (``get_attention_maps``)."""
    maps = cls_attention_maps_per_block(backbone, x)
    if not -len(maps) <= layer < len(maps):
        raise ValueError(f"layer {layer} is not one of the backbone's {len(maps)} blocks")
    return maps[layer]


def cls_attention_maps_per_block(backbone: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """:func:`cls_attention_maps` of every block, from one forward pass: a list of ``depth`` N×heads×h×w."""
    if not hasattr(backbone, "get_attention_maps"):
        raise ValueError("cls_attention_maps needs a ViT backbone (get_attention_maps)")
    h, w = backbone.grid(x)
    return [m[:, :, 0, 1:].reshape(x.shape[0], -1, h, w) for m in backbone.get_attention_maps(x)]  # [CLS] row


def _centering_mode(centering) -> str:
    if centering is True or centering == "momentum":
        return "momentum"
    if centering is False or centering in ("none", None):
        return "none"
    if centering == "sinkhorn":
        return "sinkhorn"
    raise ValueError(f"centering must be True/'momentum', False/'none' or 'sinkhorn', got {centering!r}")


class DINO(Method):
    """DINO (see the module docstring). method_kwargs:

    out_dim K (65536 in the paper), hidden_dim, bottleneck_dim, norm_last_layer,
    freeze_last_layer_steps (steps during which the last layer of the head is not trained),
    base_momentum (0.996 → 1, cosine), student_temp (0.1), teacher_temp (0.04 → 0.07),
    warmup_teacher_temp, warmup_teacher_temp_fraction (fraction of the run for the linear warm-up),
    center_momentum (0.9), centering (True | False | "sinkhorn"), sharpening (False: τ_t = τ_s),
    n_local, local_size, global_scale, local_scale, jitter/gray/blur/solarize probabilities,
    ibot_weight, patch_out_dim, ibot_mask_ratio, ibot_mask_prob, koleo_weight, sinkhorn_iters.
    """

    name = "dino"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        out_dim=4096,
        hidden_dim=2048,
        bottleneck_dim=256,
        norm_last_layer=True,
        freeze_last_layer_steps=0,
        base_momentum=0.996,
        student_temp=0.1,
        teacher_temp=0.04,
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_fraction=0.0,
        center_momentum=0.9,
        centering=True,
        sharpening=True,
        n_local=6,
        local_size=None,
        global_scale=(0.4, 1.0),
        local_scale=(0.05, 0.4),
        jitter=(0.4, 0.4, 0.2, 0.1),
        jitter_p=0.8,
        gray_p=0.2,
        blur_p=(1.0, 0.1, 0.5),
        solarize_p=0.2,
        ibot_weight=0.0,
        patch_out_dim=None,
        ibot_mask_ratio=(0.1, 0.5),
        ibot_mask_prob=0.5,
        koleo_weight=0.0,
        sinkhorn_iters=3,
    ):
        super().__init__(backbone, info, image_size)
        for name, t in (
            ("student_temp", student_temp),
            ("teacher_temp", teacher_temp),
            ("warmup_teacher_temp", warmup_teacher_temp),
        ):
            if not (isinstance(t, (int, float)) and t > 0 and math.isfinite(t)):
                raise ValueError(f"dino: {name} must be a number > 0, got {t!r}")
        if not 0.0 <= base_momentum <= 1.0 or not 0.0 <= center_momentum <= 1.0:
            raise ValueError(
                f"dino: momenta must be in [0, 1], got base_momentum={base_momentum}, center_momentum={center_momentum}"
            )
        if not 0.0 <= warmup_teacher_temp_fraction <= 1.0:
            raise ValueError(
                f"dino: warmup_teacher_temp_fraction must be in [0, 1], got {warmup_teacher_temp_fraction}"
            )
        if not (isinstance(n_local, int) and n_local >= 0):
            raise ValueError(f"dino: n_local must be an integer ≥ 0, got {n_local!r}")
        if ibot_weight < 0 or koleo_weight < 0:
            raise ValueError(f"dino: ibot_weight and koleo_weight must be ≥ 0, got {ibot_weight}, {koleo_weight}")
        self.centering = _centering_mode(centering)
        self.sharpening = bool(sharpening)
        local_size = int(local_size) if local_size is not None else max(1, round(image_size * 96 / 224))
        is_vit = hasattr(backbone, "forward_tokens") and hasattr(backbone, "patch_size")
        if is_vit:
            p = backbone.patch_size
            bad = [s for s in ([image_size] + ([local_size] if n_local else [])) if s % p]
            if bad:
                raise ValueError(
                    f"dino with a ViT of patch size {p} needs crop sizes divisible by {p}; got global "
                    f"{image_size}, local {local_size} (set method_kwargs local_size to a multiple of {p})"
                )
        if n_local and local_size >= image_size:
            raise ValueError(
                f"dino: local crops ({local_size} px) must be smaller than the global crops ({image_size} px)"
            )
        if ibot_weight > 0 and not is_vit:
            raise ValueError(
                "dino: the iBOT masked-patch loss (ibot_weight > 0) needs a ViT backbone "
                "(forward_tokens with a mask token): use backbone=vit_tiny, vit_small or vit_base"
            )
        if not 0.0 <= ibot_mask_ratio[0] <= ibot_mask_ratio[1] < 1.0 or not 0.0 <= ibot_mask_prob <= 1.0:
            raise ValueError(
                f"dino: ibot_mask_ratio must be 0 ≤ low ≤ high < 1 and ibot_mask_prob in [0, 1], got {ibot_mask_ratio}, {ibot_mask_prob}"
            )

        self.student_temp = float(student_temp)
        # without sharpening the teacher is as soft as the student
        self.teacher_temp_final = float(teacher_temp) if sharpening else self.student_temp
        self.teacher_temp_start = float(warmup_teacher_temp) if sharpening else self.student_temp
        self.warmup_fraction = float(warmup_teacher_temp_fraction) if sharpening else 0.0
        self.base_momentum, self.center_momentum = float(base_momentum), float(center_momentum)
        self.freeze_last_layer_steps = int(freeze_last_layer_steps)
        self.n_local, self.local_size = n_local, local_size
        self.ibot_weight, self.koleo_weight = float(ibot_weight), float(koleo_weight)
        self.ibot_mask_ratio, self.ibot_mask_prob = tuple(ibot_mask_ratio), float(ibot_mask_prob)
        self.sinkhorn_iters = int(sinkhorn_iters)

        d = backbone.out_dim
        self.head = DINOHead(d, out_dim, hidden_dim, bottleneck_dim, norm_last_layer=norm_last_layer)
        self.teacher_backbone = momentum_copy(backbone)
        self.teacher_head = momentum_copy(self.head)
        self.register_buffer("center", torch.zeros(1, out_dim))
        if self.ibot_weight > 0:
            k_patch = int(patch_out_dim or out_dim)
            # DINOv2 uses a separate head for the patch tokens; iBOT shares it. Separate here.
            self.patch_head = DINOHead(d, k_patch, hidden_dim, bottleneck_dim, norm_last_layer=norm_last_layer)
            self.teacher_patch_head = momentum_copy(self.patch_head)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
            nn.init.normal_(self.mask_token, std=0.02)
            self.register_buffer("patch_center", torch.zeros(1, 1, k_patch))
        # schedules' position (buffers, so a resumed run continues with the same temperature)
        self.register_buffer("teacher_temp_now", torch.tensor(self.teacher_temp_start))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.head.freeze_last = self.freeze_last_layer_steps > 0

        # BYOL's augmentations, as DINO uses them: global view 1 always blurred, global view 2 rarely
        # blurred and sometimes solarised, local views blurred half the time. At 32 px blur_p = 0.
        b1, b2, bl = blur_p
        common = dict(jitter=tuple(jitter), jitter_p=jitter_p, gray_p=gray_p)
        self.global_recipes = [
            ViewRecipe(size=image_size, scale=tuple(global_scale), blur_p=b1, **common),
            ViewRecipe(size=image_size, scale=tuple(global_scale), blur_p=b2, solarize_p=solarize_p, **common),
        ]
        self.local_recipe = ViewRecipe(size=local_size, scale=tuple(local_scale), blur_p=bl, **common)

    # ------------------------------------------------------------------ views
    @torch.no_grad()
    def make_views(self, images, labels):
        """[global 1, global 2, local 1, …, local n]: N×3×S×S twice, then N×3×s×s n times."""
        return [r(images) for r in self.global_recipes] + [self.local_recipe(images) for _ in range(self.n_local)]

    # ------------------------------------------------------------------ networks
    def _student_global(self, x: torch.Tensor, mask: torch.Tensor | None):
        """One pass over the concatenated global crops: ([CLS] features B×D, patch tokens B×L×D or None)."""
        if mask is None:
            return self.backbone(x), None
        t = self.backbone.forward_tokens(x, mask=mask, mask_token=self.mask_token)  # B×(1+L)×D
        return self.backbone.pool_tokens(t), t[:, 1:]

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor):
        """Teacher on the concatenated global crops: ([CLS] logits B×K, patch logits B×L×K' or None)."""
        if self.ibot_weight > 0:
            t = self.teacher_backbone.forward_tokens(x)
            return self.teacher_head(self.teacher_backbone.pool_tokens(t)), self.teacher_patch_head(t[:, 1:])
        return self.teacher_head(self.teacher_backbone(x)), None

    def teacher_targets(self, logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
        """Centred and sharpened teacher probabilities (or Sinkhorn–Knopp assignments): …×K."""
        if self.centering == "sinkhorn":
            flat = logits.reshape(-1, logits.shape[-1])
            return sinkhorn_knopp(flat, temp, self.sinkhorn_iters).view_as(logits)
        c = center if self.centering == "momentum" else torch.zeros_like(center)
        return F.softmax((logits.float() - c) / temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor, patch_logits: torch.Tensor | None = None) -> None:
        """C ← m·C + (1 − m)·mean of the teacher's logits over the global batch (every process's)."""
        batch_center = dist.all_gather(teacher_logits.float()).mean(dim=0, keepdim=True)  # 1×K
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)
        if patch_logits is not None:
            pc = dist.all_gather(patch_logits.float()).mean(dim=(0, 1), keepdim=True)  # 1×1×K'
            self.patch_center.mul_(self.center_momentum).add_(pc, alpha=1 - self.center_momentum)

    def forward(self, views, labels):
        if not isinstance(views, (list, tuple)) or len(views) < 2:
            raise ValueError("dino needs a list of views: two global crops, then the local crops")
        g1, g2 = check_pair(self.name, views[:2], what="global crops")
        n = g1.shape[0]
        temp = float(self.teacher_temp_now)
        globals_ = torch.cat([g1, g2])  # 2N×3×S×S: one pass
        mask = None
        if self.ibot_weight > 0:
            h, w = self.backbone.grid(globals_)
            mask = random_patch_mask(2 * n, h * w, self.ibot_mask_ratio, self.ibot_mask_prob, device=globals_.device)

        # student: one pass per crop size (consecutive views of the same shape are batched)
        feats, patch_tokens = self._student_global(globals_, mask)  # 2N×D
        student_logits = list(self.head(feats).chunk(2))  # 2 × N×K
        locals_ = list(views[2:])
        i = 0
        while i < len(locals_):
            j = i
            while j < len(locals_) and locals_[j].shape == locals_[i].shape:
                j += 1
            out = self.head(self.backbone(torch.cat(locals_[i:j])))  # (j−i)·N×K
            student_logits += list(out.chunk(j - i))
            i = j

        # teacher: global crops only, no gradient
        t_logits, t_patch = self.teacher_forward(globals_)  # 2N×K, 2N×L×K'
        targets = self.teacher_targets(t_logits, self.center, temp)  # 2N×K
        dino_loss = dino_cross_entropy(student_logits, list(targets.chunk(2)), self.student_temp)
        loss = dino_loss
        logs = {}
        if self.ibot_weight > 0:
            patch_targets = self.teacher_targets(t_patch, self.patch_center, temp)  # 2N×L×K'
            ibot = ibot_patch_loss(self.patch_head(patch_tokens), patch_targets, mask, self.student_temp)
            loss = loss + self.ibot_weight * ibot
            logs["ibot_loss"] = ibot.detach()
        if self.koleo_weight > 0:
            kl = sum(koleo(f) for f in feats.chunk(2)) / 2  # per global crop, as DINOv2
            loss = loss + self.koleo_weight * kl
            logs["koleo"] = kl.detach()
        if self.centering == "momentum":
            self.update_center(t_logits, t_patch)

        with torch.no_grad():  # collapse monitors (the paper's Fig. 7): entropy and KL of the targets
            h_t = entropy(targets).mean()  # per-sample teacher entropy: 0 = one-hot, log K = uniform
            h_mean = entropy(targets.mean(dim=0))  # entropy of the batch's mean target: 0 = all samples alike
            kl_div = dino_loss.detach() - h_t  # cross-entropy − entropy = KL(P_t ‖ P_s), averaged over pairs
        return {
            "loss": loss,
            "dino_loss": dino_loss.detach(),
            "teacher_entropy": h_t,
            "teacher_mean_entropy": h_mean,
            "kl": kl_div,
            "teacher_temp": torch.tensor(temp),
            **logs,
        }

    def on_step_end(self, step, total_steps):
        m = cosine_momentum(step, total_steps, self.base_momentum)
        ema_update_(self.teacher_backbone, self.backbone, m)
        ema_update_(self.teacher_head, self.head, m)
        if self.ibot_weight > 0:
            ema_update_(self.teacher_patch_head, self.patch_head, m)
        done = step + 1
        self.steps_done.fill_(done)
        warmup = round(self.warmup_fraction * total_steps)
        self.teacher_temp_now.fill_(teacher_temperature(done, warmup, self.teacher_temp_start, self.teacher_temp_final))
        self.head.freeze_last = done < self.freeze_last_layer_steps
        if self.ibot_weight > 0:
            self.patch_head.freeze_last = self.head.freeze_last
        return {"momentum": m}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        frozen = int(self.steps_done) < self.freeze_last_layer_steps
        self.head.freeze_last = frozen
        if self.ibot_weight > 0:
            self.patch_head.freeze_last = frozen
        return out

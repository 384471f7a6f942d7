"""Contrastive predictive coding (CPC: van den Oord, Li & Vinyals 2018; CPC v2: Hénaff et al. 2019).

"The key insight of our model is to learn such representations by predicting the future in latent
space by using powerful autoregressive models." An encoder maps each step of a sequence to z_t, an
autoregressive network summarises z_{≤t} into a context c_t, and a linear map per step k predicts
z_{t+k} from c_t. The score of a candidate z is s_k(z, c_t) = zᵀ W_k c_t, and InfoNCE
(:func:`sslbook.losses.cpc_infonce`) asks the true z_{t+k} to win against the other encodings of the
batch::

    x_t ──enc──▶ z_t ──autoregressive──▶ c_t ──W_k──▶ ẑ_{t+k}  vs  {z_{t+k}} ∪ negatives

For images (CPC v2) the "sequence" is a grid of overlapping patches read top to bottom:

1. cut each image into a G×G grid of ``patch``-pixel patches with ``stride`` (overlapping when
   stride < patch) and augment **each patch** independently (colour jitter, grey, colour dropping),
   so that low-level colour statistics shared by neighbouring patches are no shortcut;
2. the **patch encoder** (the backbone, ending in global mean pooling) gives z_{i,j} ∈ R^D per patch;
3. a **masked context network** (stacked convolutions whose kernels are zero below their centre row)
   gives c_{i,j}, which depends only on z_{u,v} with u ≤ i: the rows it must predict stay unseen;
4. for k in ``steps``, ẑ_{i+k,j} = W_k c_{i,j} is scored against every patch of every image of the
   batch; the positive is the patch k rows below.

The representation the evaluation protocols measure (``self.backbone``, a :class:`PatchGridEncoder`)
is the patch encoder applied to the same grid of a whole image and mean-pooled over the G×G patches,
as CPC v2 evaluates its encoder: the context network and the W_k are thrown away.

A 1-D version for intuition, :class:`SequenceCPC` (GRU context on a sequence of vectors), uses the
same loss; chapter 7 trains it on :func:`toy_sequences`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.augment import color_jitter, random_grayscale, random_resized_crop
from sslbook.losses import cpc_infonce
from sslbook.methods.base import Method
from sslbook.methods.patches import drop_colour_channels


def grid_size(image_size: int, patch: int, stride: int, who: str = "cpc") -> int:
    """G, the number of patches per side; a clear ValueError when the grid cannot tile the image."""
    if patch < 1 or stride < 1:
        raise ValueError(f"{who}: patch size and stride must be ≥ 1 pixel, got patch={patch}, stride={stride}")
    if image_size < patch or (image_size - patch) % stride:
        below = patch + max(0, (image_size - patch) // stride) * stride
        above = below + stride if image_size >= patch else patch + stride
        options = sorted({s for s in (below, above) if s >= patch + stride})
        raise ValueError(
            f"{who}: a grid of {patch}×{patch} patches with stride {stride} cannot tile {image_size}×{image_size} "
            f"images exactly; the image side must be {patch} + k·{stride} with k ≥ 1 "
            f"(e.g. {' or '.join(map(str, options))} px), or change patch/stride"
        )
    g = (image_size - patch) // stride + 1
    if g < 2:
        raise ValueError(
            f"{who}: {patch}-px patches with stride {stride} give a 1×1 grid on {image_size}-px images: "
            f"nothing to predict; use images of at least {patch + stride} px"
        )
    return g


def cut_grid(x: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """x: N×3×H×W → patches N×Gh×Gw×3×patch×patch (row-major, Gh = (H − patch)/stride + 1)."""
    n, c, h, w = x.shape
    gh, gw = grid_size(h, patch, stride), grid_size(w, patch, stride)
    p = x.unfold(2, patch, stride).unfold(3, patch, stride)  # N×C×Gh×Gw×p×p
    assert p.shape[2:4] == (gh, gw)
    return p.permute(0, 2, 3, 1, 4, 5).contiguous()


class PatchGridEncoder(nn.Module):
    """The representation of a whole image under CPC: the patch encoder on every patch of the grid,
    mean-pooled over the grid. x: N×3×H×W → N×D (``out_dim`` = the patch encoder's)."""

    def __init__(self, encoder: nn.Module, patch: int, stride: int):
        super().__init__()
        self.encoder, self.patch, self.stride = encoder, int(patch), int(stride)
        self.out_dim = encoder.out_dim

    def encode_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """patches: N×Gh×Gw×3×p×p → z: N×Gh×Gw×D (the backbone ends in global mean pooling)."""
        n, gh, gw = patches.shape[:3]
        return self.encoder(patches.flatten(0, 2)).view(n, gh, gw, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_patches(cut_grid(x, self.patch, self.stride)).mean(dim=(1, 2))

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The grid of patch encodings as a spatial map N×D×Gh×Gw (before the mean over the grid)."""
        return self.encode_patches(cut_grid(x, self.patch, self.stride)).permute(0, 3, 1, 2)


class MaskedConv2d(nn.Conv2d):
    """A k×k convolution whose kernel rows below the centre are zero: the output at row i sees input
    rows i − k//2 … i only (never a row below). "Same" padding, so the grid keeps its size."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3):
        if kernel_size % 2 == 0:
            raise ValueError(f"MaskedConv2d needs an odd kernel size, got {kernel_size}")
        super().__init__(c_in, c_out, kernel_size, padding=kernel_size // 2)
        mask = torch.ones_like(self.weight)
        mask[:, :, kernel_size // 2 + 1 :] = 0  # rows below the centre row
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class ContextNetwork(nn.Module):
    """CPC v2's autoregressive context network on the grid, as a stack of masked residual blocks
    (a PixelCNN-like network without gating; no batch norm, whose batch statistics would mix rows).
    z: N×D×G×G → c: N×C×G×G, c[:, :, i] a function of z[:, :, :i+1] only. ``layers`` blocks of 3×3
    masked convolutions reach ``layers`` rows up and ``layers`` columns to each side."""

    def __init__(self, d_in: int, width: int, layers: int):
        super().__init__()
        self.inp = nn.Conv2d(d_in, width, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), MaskedConv2d(width, width, 3), nn.ReLU(), nn.Conv2d(width, width, 1))
            for _ in range(layers)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c = self.inp(z)
        for block in self.blocks:
            c = c + block(c)
        return c


class CPC(Method):
    """CPC v2 on a patch grid (see the module docstring). ``self.backbone`` is a
    :class:`PatchGridEncoder` around the given backbone, the representation evaluated.

    Args (``method_kwargs``):
        patch, stride: patch side and stride in pixels; (image_size − patch) must be a multiple of stride.
        steps: the prediction offsets k (rows below), e.g. (1, 2).
        temperature: τ dividing the scores (> 0); 1 with ``normalize=False`` is the paper's raw zᵀW_k c.
        normalize: score with the cosine of ẑ and z instead of the dot product.
        context_width, context_layers: the context network's width and number of masked blocks
            (default G − 1 blocks: every row above is in the receptive field).
        crop_scale, flip_p: image-level random resized crop and flip before cutting the grid.
        jitter_p, gray_p, drop_p: per-patch colour jitter, grey and colour-dropping probabilities.
    """

    name = "cpc"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        patch: int = 16,
        stride: int = 8,
        steps=(1, 2),
        temperature: float = 1.0,
        normalize: bool = False,
        context_width: int = 256,
        context_layers: int | None = None,
        crop_scale=(1.0, 1.0),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        drop_p: float = 0.0,
    ):
        if not temperature > 0:
            raise ValueError(f"cpc needs a temperature > 0, got {temperature}")
        g = grid_size(image_size, patch, stride)
        steps = tuple(int(k) for k in steps)
        if not steps or any(not 0 < k < g for k in steps):
            raise ValueError(f"cpc steps must be row offsets in 1…{g - 1} for a {g}×{g} grid, got {steps}")
        super().__init__(PatchGridEncoder(backbone, patch, stride), info, image_size)
        self.grid = g
        self.patch, self.stride, self.steps = int(patch), int(stride), steps
        self.temperature, self.normalize = float(temperature), bool(normalize)
        d = backbone.out_dim
        layers = self.grid - 1 if context_layers is None else int(context_layers)
        self.context = ContextNetwork(d, context_width, layers)
        self.predictors = nn.ModuleList(nn.Conv2d(context_width, d, 1) for _ in steps)  # W_k, one per k
        self.crop_scale, self.flip_p = tuple(map(float, crop_scale)), float(flip_p)
        self.jitter_p, self.gray_p, self.drop_p = float(jitter_p), float(gray_p), float(drop_p)

    @torch.no_grad()
    def make_views(self, images, labels):
        """images N×3×H×W → [patches N×G×G×3×p×p], each patch with its own colour augmentation."""
        x = images
        if self.crop_scale != (1.0, 1.0) or self.flip_p > 0 or x.shape[-1] != self.image_size:
            x = random_resized_crop(x, self.image_size, self.crop_scale, flip_p=self.flip_p)
        patches = cut_grid(x, self.patch, self.stride)
        flat = patches.flatten(0, 2)  # (N·G²)×3×p×p: every patch draws its own parameters
        if self.jitter_p > 0:
            flat = color_jitter(flat, 0.4, 0.4, 0.4, 0.1, p=self.jitter_p)
        if self.gray_p > 0:
            flat = random_grayscale(flat, self.gray_p)
        if self.drop_p > 0:
            drop = torch.rand(flat.shape[0], device=flat.device) < self.drop_p
            flat = torch.where(drop.view(-1, 1, 1, 1), drop_colour_channels(flat), flat)
        return [flat.view_as(patches)]

    def predict(self, patches: torch.Tensor):
        """patches N×G×G×3×p×p → (z N×G×G×D, c N×G×G×C, [ẑ_k N×(G−k)×G×D for k in steps])."""
        z = self.backbone.encode_patches(patches)  # N×G×G×D
        c = self.context(z.permute(0, 3, 1, 2))  # N×C×G×G, row i sees rows ≤ i
        preds = [w(c[:, :, : self.grid - k]).permute(0, 2, 3, 1) for k, w in zip(self.steps, self.predictors)]
        return z, c.permute(0, 2, 3, 1), preds

    def forward(self, views, labels=None):
        patches = views[0] if isinstance(views, (list, tuple)) else views
        if patches.dim() != 6 or patches.shape[1:3] != (self.grid, self.grid):
            raise ValueError(
                f"cpc expects patches N×{self.grid}×{self.grid}×3×{self.patch}×{self.patch} "
                f"(from make_views), got {tuple(patches.shape)}"
            )
        z, _, preds = self.predict(patches)
        loss = cpc_infonce(z, preds, self.steps, self.temperature, self.normalize)
        with torch.no_grad():  # how often the true patch k = steps[0] rows below is the best candidate
            zf = z.detach().float().reshape(-1, z.shape[-1])
            p = preds[0].detach().float().reshape(-1, zf.shape[1])
            if self.normalize:
                zf, p = F.normalize(zf, dim=1), F.normalize(p, dim=1)
            index = torch.arange(zf.shape[0], device=zf.device).view(z.shape[:3])[:, self.steps[0] :].reshape(-1)
            acc = ((p @ zf.T).argmax(1) == index).float().mean()
        return {"loss": loss, "pred_top1": acc}


# ------------------------------------------------------------------------------------------------
# The 1-D version: a sequence of vectors, a GRU context, predictions k steps ahead
# ------------------------------------------------------------------------------------------------


class SequenceCPC(nn.Module):
    """CPC on sequences (van den Oord et al. 2018, Figure 1): x N×T×F → z_t = enc(x_t) (an MLP per
    step), c_t = GRU(z_1 … z_t), ẑ_{t+k} = W_k c_t, loss :func:`sslbook.losses.cpc_infonce` with the
    other steps of the same sequence and of the other sequences as negatives."""

    def __init__(self, in_dim: int, dim: int = 32, context_dim: int = 32, steps=(1, 2, 3), temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"SequenceCPC needs a temperature > 0, got {temperature}")
        self.steps, self.temperature = tuple(int(k) for k in steps), float(temperature)
        self.encoder = nn.Sequential(nn.Linear(in_dim, 64), nn.ReLU(), nn.Linear(64, dim))
        self.gru = nn.GRU(dim, context_dim, batch_first=True)
        self.predictors = nn.ModuleList(nn.Linear(context_dim, dim, bias=False) for _ in self.steps)

    def forward(self, x: torch.Tensor) -> dict:
        """x: N×T×F → {"loss", "z": N×T×D, "c": N×T×C, "preds": [N×(T−k)×D]}."""
        z = self.encoder(x)
        c, _ = self.gru(z)  # causal: c_t depends on z_1 … z_t
        t = x.shape[1]
        preds = [w(c[:, : t - k]) for k, w in zip(self.steps, self.predictors)]
        return {"loss": cpc_infonce(z, preds, self.steps, self.temperature), "z": z, "c": c, "preds": preds}


def toy_sequences(n: int, steps: int = 16, dim: int = 16, states: int = 17, noise: float = 0.3, generator=None):
    """Toy sequences with a fast and two slow latents (chapter 7). Each sequence has a *style* u ∈ R⁴
    (constant, visible in every step, like a speaker's voice) and a *speed* v ∈ {1, 2, 3} (constant, but
    visible only across steps); its *state* advances s_{t+1} = s_t + v (mod ``states``) from a random
    start. Step t shows x_t = A[s_t] + B u + noise, with A (states×dim) and B (4×dim) fixed random
    matrices (the same "world" for every call). With a prime number of states ≥ steps no state repeats
    within a sequence. Returns (x N×steps×dim, speed N, state N×steps, style N×4)."""
    world = torch.Generator().manual_seed(1234)
    a, b = torch.randn(states, dim, generator=world), torch.randn(4, dim, generator=world) * 0.5
    speed = torch.randint(1, 4, (n,), generator=generator)
    start = torch.randint(0, states, (n, 1), generator=generator)
    state = (start + speed[:, None] * torch.arange(steps)) % states  # N×steps
    style = torch.randn(n, 4, generator=generator)
    x = a[state] + (style @ b)[:, None] + noise * torch.randn(n, steps, dim, generator=generator)
    return x, speed, state, style

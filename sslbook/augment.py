"""Augmentations as batched tensor operations with per-sample random parameters.

One implementation serves both places a recipe can run:

- on the accelerator, on a whole batch (every image draws its own crop, flip, jitter, …);
- on the CPU, inside DataLoader workers (the same function on a batch there).

All functions take ``x``: float images N×3×H×W in [0, 1] on any device, and an optional
``torch.Generator`` on the same device for reproducibility; they return a new tensor in [0, 1].

A recipe is a :class:`ViewRecipe`: a dataclass of the usual parameters (SimCLR's crop scale,
colour-jitter strength, blur and solarisation probabilities), callable on a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=x.device, generator=g) * (high - low) + low


def _coin(n: int, p: float, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """Bool N: True with probability p, independently per sample."""
    return torch.rand(n, device=x.device, generator=g) < p


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop a random area fraction ``scale`` and aspect ``ratio`` of each image, resize to size×size.

    Done as one affine resampling per image (``affine_grid`` + ``grid_sample``); a horizontal flip
    with probability ``flip_p`` is folded into the same affine map by negating its x-scale.
    x: N×3×H×W → N×3×size×size.
    """
    n = x.shape[0]
    area = _uniform(n, *scale, x, generator)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), x, generator)
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width as a fraction of the image width
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * (1 - w)  # centre in [-1, 1]
    cy = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * (1 - h)
    sign = torch.where(_coin(n, flip_p, x, generator), -1.0, 1.0).to(x.dtype)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def horizontal_flip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    flip = _coin(x.shape[0], p, x, generator).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def random_crop(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad by reflection and cut a random H×W window per image (the classic CIFAR augmentation)."""
    n, c, h, w = x.shape
    if padding <= 0:
        return x
    padded = F.pad(x, (padding,) * 4, mode="reflect")
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return out.gather(3, cols)


_GRAY = (0.299, 0.587, 0.114)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601) repeated on three channels. x: N×3×H×W → N×3×H×W."""
    weights = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True).expand_as(x)


def random_grayscale(x: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    mask = _coin(x.shape[0], p, x, generator).view(-1, 1, 1, 1)
    return torch.where(mask, grayscale(x), x)


def _hue_rotation(angle: torch.Tensor) -> torch.Tensor:
    """N×3×3 RGB matrices rotating hue by ``angle`` (radians) about the grey axis."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    k = 1.0 / 3.0
    s = math.sqrt(k)
    a = cos + (1 - cos) * k
    b = k * (1 - cos) - s * sin
    c = k * (1 - cos) + s * sin
    return torch.stack([torch.stack([a, b, c], -1), torch.stack([c, a, b], -1), torch.stack([b, c, a], -1)], -2)


def color_jitter(
    x: torch.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation (factors in [1−s, 1+s]) and hue shift (±hue of a turn).

    Applied with probability ``p`` per image, in a fixed order. The hue shift is a rotation of the RGB
    cube about its grey diagonal, a close, cheap stand-in for shifting H in HSV.
    """
    n = x.shape[0]
    apply = _coin(n, p, x, generator).view(-1, 1, 1, 1)
    out = x
    if brightness > 0:
        out = out * _uniform(n, 1 - brightness, 1 + brightness, x, generator).view(-1, 1, 1, 1)
    if contrast > 0:
        mean = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * _uniform(n, 1 - contrast, 1 + contrast, x, generator).view(-1, 1, 1, 1) + mean
    if saturation > 0:
        gray = grayscale(out)
        out = (out - gray) * _uniform(n, 1 - saturation, 1 + saturation, x, generator).view(-1, 1, 1, 1) + gray
    if hue > 0:
        rot = _hue_rotation(_uniform(n, -hue, hue, x, generator) * 2 * math.pi).to(x.dtype)
        out = torch.einsum("nij,njhw->nihw", rot, out)
    return torch.where(apply, out.clamp(0, 1), x)


def blur(x: torch.Tensor, sigma: torch.Tensor | float, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of every image, reflect padding: ``sigma`` in pixels, one per image (N) or one
    for all; kernel of 2·radius + 1 taps (radius < H, W). The one blur of the package: the augmentation's
    (:func:`gaussian_blur`) and the robustness protocol's corruption. x: N×C×H×W → N×C×H×W."""
    n, c, h, w = x.shape
    s = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).expand(n)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * s.view(-1, 1) ** 2))
    k = k / k.sum(1, keepdim=True)  # N×K
    k = k.repeat_interleave(c, 0)  # (N·C)×K, one kernel per channel of each image
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), k.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), k.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


def gaussian_blur(
    x: torch.Tensor,
    sigma: tuple[float, float] = (0.1, 2.0),
    p: float = 0.5,
    kernel_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`blur` with a per-sample sigma (in pixels) drawn from the range ``sigma``, applied with probability p.

    The kernel size defaults to about 10% of the image side (odd), as in SimCLR.
    """
    n, h = x.shape[0], x.shape[2]
    if kernel_size is None:
        kernel_size = max(3, int(0.1 * h) // 2 * 2 + 1)
    blurred = blur(x, _uniform(n, *sigma, x, generator), kernel_size // 2)
    return torch.where(_coin(n, p, x, generator).view(-1, 1, 1, 1), blurred, x)


def solarize(
    x: torch.Tensor, p: float = 0.2, threshold: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    mask = _coin(x.shape[0], p, x, generator).view(-1, 1, 1, 1)
    return torch.where(mask & (x >= threshold), 1 - x, x)


@dataclass
class ViewRecipe:
    """One view's augmentation recipe; call it on a batch: ``view = recipe(x)``.

    Defaults are SimCLR's CIFAR recipe: random resized crop (scale 0.08–1, aspect ratio 3/4–4/3), horizontal flip,
    colour jitter (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale with p = 0.2, no blur at 32 px.
    """

    size: int = 32
    scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = random_resized_crop(x, self.size, self.scale, self.ratio, flip_p=self.flip_p, generator=generator)
        if self.jitter_p > 0:
            x = color_jitter(x, *self.jitter, p=self.jitter_p, generator=generator)
        if self.gray_p > 0:
            x = random_grayscale(x, self.gray_p, generator=generator)
        if self.blur_p > 0:
            x = gaussian_blur(x, self.blur_sigma, self.blur_p, generator=generator)
        if self.solarize_p > 0:
            x = solarize(x, self.solarize_p, generator=generator)
        return x


def asymmetric_pair(
    size: int, scale, blur_p: tuple[float, float], solarize_p: tuple[float, float], jitter, gray_p: float
) -> list[ViewRecipe]:
    """BYOL's two view recipes (Grill et al. 2020, Table 6), also Barlow Twins': the same crop, flip, jitter and
    grayscale, view ``i`` blurred with probability ``blur_p[i]`` and solarised with ``solarize_p[i]``."""
    return [
        ViewRecipe(
            size=size,
            scale=tuple(scale),
            blur_p=blur_p[i],
            solarize_p=solarize_p[i],
            jitter=tuple(jitter),
            gray_p=gray_p,
        )
        for i in range(2)
    ]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape, values 0…255) → float32 in [0, 1]. Float input is returned as is."""
    return images if images.is_floating_point() else images.float().div_(255.0)


def mixup_lambda(n: int, alpha: float, device=None) -> torch.Tensor:
    """MixMatch's per-item mixing weights (Berthelot et al. 2019, eqs. 8–9): λ ~ Beta(α, α), then
    λ' = max(λ, 1 − λ) ≥ 0.5, so a mixed item stays closer to its first input. Returns N floats."""
    if not alpha > 0:
        raise ValueError(f"MixUp needs alpha > 0, got {alpha}")
    lam = torch.distributions.Beta(float(alpha), float(alpha)).sample((n,))
    return torch.maximum(lam, 1 - lam).to(device)


def mixup(x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al., "mixup: Beyond Empirical Risk Minimization", 2018) of item i with item perm[i]::

        x'_i = λ_i x_i + (1 − λ_i) x_{perm_i},   y'_i = λ_i y_i + (1 − λ_i) y_{perm_i}

    x: N×… (images, any shape after the first dim); y: N×C (label distributions); lam: N; perm: N indices
    (into x). The labels are mixed with the same weights as the images."""
    if not (len(x) == len(y) == len(lam) == len(perm)):
        raise ValueError(
            f"mixup needs as many items, weights and partners: {len(x)}, {len(y)}, {len(lam)}, {len(perm)}"
        )
    lx = lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    ly = lam.to(y.dtype).view(-1, *([1] * (y.dim() - 1)))
    return lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm]

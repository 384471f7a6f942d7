"""Colour spaces for the colorization pretext tasks: sRGB ↔ CIE Lab (D65 white), and ab quantisation.

Lab separates lightness ``L`` (0 black … 100 white) from the two colour-opponent channels ``a``
(green − … + red) and ``b`` (blue − … + yellow), both roughly in [−110, 110]. A grey pixel has
a = b = 0, so "predict ab from L" is exactly "colour a grayscale image" (Zhang et al. 2016, 2017).

All functions take batched tensors N×3×H×W (channels first) on any device and compute in float32.
"""

from __future__ import annotations

import torch

# sRGB primaries → CIE XYZ (D65), IEC 61966-2-1
_RGB_TO_XYZ = torch.tensor(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=torch.float64,
)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
_WHITE = _RGB_TO_XYZ.sum(1)  # the XYZ of sRGB white (1, 1, 1): the D65 reference white (0.9505, 1, 1.089)
_DELTA = 6 / 29
AB_RANGE = 110.0  # |a|, |b| ≤ 110 covers the sRGB gamut


def _check(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{what} expects N×3×H×W images, got shape {tuple(x.shape)}")


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(device=x.device, dtype=x.dtype), x)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] → Lab (L in [0, 100], a, b in about [−110, 110]). rgb: N×3×H×W → N×3×H×W."""
    _check(rgb, "rgb_to_lab")
    with torch.autocast(rgb.device.type, enabled=False):  # colour maths in float32 even under bf16 autocast
        return _rgb_to_lab(rgb.float().clamp(0, 1))


def _rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)  # undo the sRGB gamma
    xyz = _mix(_RGB_TO_XYZ, linear) / _WHITE.to(rgb.device, rgb.dtype).view(1, 3, 1, 1)
    f = torch.where(xyz > _DELTA**3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * _DELTA**2) + 4 / 29)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab → sRGB in [0, 1] (colours outside the sRGB gamut are clipped). lab: N×3×H×W → N×3×H×W."""
    _check(lab, "lab_to_rgb")
    with torch.autocast(lab.device.type, enabled=False):
        return _lab_to_rgb(lab.float())


def _lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], dim=1)
    xyz = torch.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4 / 29))
    xyz = xyz * _WHITE.to(lab.device, lab.dtype).view(1, 3, 1, 1)
    linear = _mix(_XYZ_TO_RGB, xyz).clamp(0, 1)
    rgb = torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
    return rgb.clamp(0, 1)


def is_grayscale(rgb: torch.Tensor, tol: float = 2 / 255) -> bool:
    """True when no pixel of the batch differs between its R, G and B channels by more than ``tol``."""
    if rgb.dim() == 4 and rgb.shape[1] == 1:
        return True
    spread = rgb.amax(dim=1) - rgb.amin(dim=1)
    return bool(spread.max() <= tol)


def require_colour(rgb: torch.Tensor, method: str) -> None:
    """A clear ValueError when a colorization method is given grayscale images: there is no colour to predict."""
    if rgb.dim() != 4 or rgb.shape[1] not in (1, 3):
        raise ValueError(f"{method} expects N×3×H×W RGB images, got shape {tuple(rgb.shape)}")
    if is_grayscale(rgb):
        raise ValueError(
            f"{method} is a colorization method and needs colour images, but this batch is grayscale "
            "(R = G = B everywhere): there is no colour to predict. Use an RGB data set (shapes, cifar10, stl10, …)."
        )


def quantize_ab(ab: torch.Tensor, bins: int) -> torch.Tensor:
    """Index of each pixel's cell on a bins×bins grid over [−110, 110]². ab: N×2×H×W → N×H×W (long)."""
    cell = ((ab.float() + AB_RANGE) / (2 * AB_RANGE) * bins).long().clamp(0, bins - 1)
    return cell[:, 0] * bins + cell[:, 1]


def ab_bin_centres(bins: int, device=None) -> torch.Tensor:
    """The ab value at the centre of every grid cell of :func:`quantize_ab`: bins²×2."""
    c = (torch.arange(bins, device=device, dtype=torch.float32) + 0.5) / bins * 2 * AB_RANGE - AB_RANGE
    return torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)


def quantize_l(lightness: torch.Tensor, bins: int) -> torch.Tensor:
    """Index of each pixel's lightness bin over [0, 100]. lightness: N×1×H×W or N×H×W → N×H×W (long)."""
    if lightness.dim() == 4:
        lightness = lightness[:, 0]
    return (lightness.float() / 100 * bins).long().clamp(0, bins - 1)

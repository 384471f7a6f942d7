"""Cutting images into a grid of patches, batched with per-sample random jitter.

Shared by the patch-based pretext tasks (relative position, jigsaw). The geometry, for a ``grid``×``grid``
layout on an image of side S::

    cell   = S // grid                       # each grid cell is cell×cell pixels
    patch  = cell − gap − jitter             # the square cut out of each cell
    offset = gap // 2 + U{0, …, jitter}      # where the patch starts inside its cell (per sample, per patch)

so two horizontally or vertically adjacent patches are always at least ``gap`` pixels apart, and their
relative placement varies by up to ``jitter`` pixels: the network cannot line up edges across the
border (Doersch et al. 2015, Sec. 3). The grid itself (side grid·cell) is placed at a random position in
the image when the image is larger than the grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_PATCH = 4  # pixels: a patch smaller than this carries almost nothing


def grid_geometry(image_size: int, grid: int, gap: int, jitter: int, who: str) -> tuple[int, int]:
    """(cell, patch) sizes in pixels; a clear ValueError when ``image_size`` is too small to tile."""
    if gap < 0 or jitter < 0:
        raise ValueError(f"{who}: gap and jitter must be ≥ 0 (got gap={gap}, jitter={jitter})")
    cell = image_size // grid
    patch = cell - gap - jitter
    if patch < MIN_PATCH:
        need = grid * (MIN_PATCH + gap + jitter)
        raise ValueError(
            f"{who} needs images of at least {need}×{need} pixels to cut a {grid}×{grid} grid of patches "
            f"(patches of ≥ {MIN_PATCH} px, gap {gap}, jitter {jitter}); got {image_size}×{image_size}. "
            f"Use image_size ≥ {need} or a smaller gap/jitter."
        )
    return cell, patch


def cut_patches(
    x: torch.Tensor,
    cells: torch.Tensor,
    grid: int,
    cell: int,
    patch: int,
    gap: int,
    jitter: int,
    generator: torch.Generator | None = None,
    return_corners: bool = False,
):
    """Cut one patch per entry of ``cells`` from each image.

    x: N×3×H×W; cells: N×K long, grid-cell indices in [0, grid²) (row-major: index = row·grid + col).
    Returns patches N×K×3×patch×patch (and, with ``return_corners``, their top-left pixel corners
    N×K×2 as (row, col) in image coordinates).
    """
    n, c, h, w = x.shape
    if min(h, w) < grid * cell:
        raise ValueError(
            f"images of {h}×{w} pixels are smaller than the {grid * cell}-pixel grid this method was built for"
        )
    k = cells.shape[1]
    dev = x.device
    # where the grid starts in the image (one random position per image)
    gy = torch.randint(0, h - grid * cell + 1, (n, 1), device=dev, generator=generator)
    gx = torch.randint(0, w - grid * cell + 1, (n, 1), device=dev, generator=generator)
    # per-patch jitter inside its cell
    jy = torch.randint(0, jitter + 1, (n, k), device=dev, generator=generator)
    jx = torch.randint(0, jitter + 1, (n, k), device=dev, generator=generator)
    top = gy + (cells // grid) * cell + gap // 2 + jy  # N×K
    left = gx + (cells % grid) * cell + gap // 2 + jx  # N×K
    ar = torch.arange(patch, device=dev)
    rows = (top.unsqueeze(-1) + ar).view(n, k, patch, 1)  # N×K×p×1
    cols = (left.unsqueeze(-1) + ar).view(n, k, 1, patch)  # N×K×1×p
    idx = torch.arange(n, device=dev).view(n, 1, 1, 1)
    out = x.permute(0, 2, 3, 1)[idx, rows, cols]  # N×K×p×p×3
    out = out.permute(0, 1, 4, 2, 3).contiguous()  # N×K×3×p×p
    if return_corners:
        return out, torch.stack([top, left], -1)
    return out


def resize_patches(p: torch.Tensor, size: int) -> torch.Tensor:
    """N×K×3×p×p → N×K×3×size×size (bilinear; unchanged when size == p)."""
    n, k, c, h, w = p.shape
    if h == size and w == size:
        return p
    out = F.interpolate(p.reshape(n * k, c, h, w), size=(size, size), mode="bilinear", align_corners=False)
    return out.view(n, k, c, size, size).clamp_(0, 1)


# Chromatic aberration: lenses focus colours at slightly different places, so the green-magenta
# offset of an edge tells how far a patch is from the image centre (Doersch et al. 2015, Sec. 3.1).
# Projecting each pixel onto the plane orthogonal to the green-magenta axis removes that cue.
_GREEN_MAGENTA = torch.tensor([-1.0, 2.0, -1.0]) / 6**0.5


def project_out_green_magenta(x: torch.Tensor) -> torch.Tensor:
    """Remove the green–magenta colour component, x ← x − (x·a) a with a = (−1, 2, −1)/√6.

    ``a`` is orthogonal to the grey axis (1, 1, 1), so brightness is untouched; only the colour
    difference "green vs red + blue" goes. x: …×3×H×W."""
    a = _GREEN_MAGENTA.to(x.device, x.dtype).view(3, 1, 1)
    coeff = (x * a).sum(-3, keepdim=True)  # …×1×H×W
    return (x - coeff * a).clamp(0, 1)


def drop_colour_channels(
    x: torch.Tensor, noise_std: float = 0.01, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Doersch's "colour dropping": keep one random channel per patch, replace the other two by that
    channel plus small Gaussian noise (so the patch becomes grey-like and carries no colour offsets).
    x: M×3×H×W."""
    m = x.shape[0]
    keep = torch.randint(0, 3, (m,), device=x.device, generator=generator)
    chan = x[torch.arange(m, device=x.device), keep].unsqueeze(1)  # M×1×H×W
    noise = torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype) * noise_std
    out = chan.expand_as(x) + noise
    out = torch.where(torch.arange(3, device=x.device).view(1, 3, 1, 1) == keep.view(m, 1, 1, 1), x, out)
    return out.clamp(0, 1)

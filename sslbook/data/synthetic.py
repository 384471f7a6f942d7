"""The embedded data set, ``shapes``: small generated scenes of ten object classes.

Every chapter of the book runs on these images at the ``tiny`` preset, on a laptop CPU and with no
download. They are generated, deterministically from a seed, in a few seconds, and cached under the
data folder.

The scene model
---------------
Each 32×32 image is drawn at twice the resolution and averaged down (anti-aliased edges):

- **Sky and ground.** A horizon at 35–65% of the height splits a sky (day blue, overcast grey or dusk
  orange, with a vertical gradient) from the ground (grass, soil, sand or snow, with a
  low-frequency texture). Light comes from above: the sky is brighter than the ground, and every
  object is shaded lighter at its top than at its bottom and casts a shadow on the ground.
- **One object of the labelled class**, standing on the ground at a random position and size, with
  random colours (within what is plausible for the class) and shape variants.
- **Clutter**: clouds, rocks and, in a third of the scenes, a smaller object of *another* class
  further back, so that "which colours are in the image" is not enough to name the class.
- **Lighting and sensor**: a global brightness and colour tint per scene, and mild pixel noise.

What this buys the book
-----------------------
- Scenes are *upright* (ground below, light from above, objects standing), so predicting a rotation
  is meaningful, as it is on photographs; nothing else (no frame, corner mark or fixed position) gives
  the rotation away.
- Colour depends on the object and the scene (green crowns, brown trunks, blue skies), so colour can
  be predicted from lightness and shape.
- Objects, horizons and textures continue across the borders of the tiles of a 3×3 grid, so
  relative position, jigsaw and inpainting can be solved only by looking at the content.
- The background styles are drawn independently of the class: the background does not name the class.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from sslbook.checkpoint import save_atomic
from sslbook.data.base import DataError, DataInfo, SegmentedImageDataset, TensorImageDataset

CLASSES: list[str] = [
    "house",
    "tree",
    "car",
    "person",
    "boat",
    "flower",
    "mushroom",
    "lamp post",
    "cup",
    "snowman",
]

# the classes of the per-pixel masks (``generate(..., masks=True)``): 0 is the background
MASK_CLASSES: list[str] = ["background", *CLASSES]

_SUPERSAMPLE = 2
_CHUNK = 1024


# ----------------------------------------------------------------------------------------------
# Small vectorised helpers. Shapes: n images, a grid of H×W pixels; params are (n,) tensors.
# ----------------------------------------------------------------------------------------------


def _u(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def _c(t: torch.Tensor) -> torch.Tensor:
    """(n,) → (n, 1, 1) for broadcasting against pixel grids."""
    return t.view(-1, 1, 1)


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hue, saturation, value in [0, 1] (each (n,)) → RGB (n, 3)."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)  # n×3
    f = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v[:, None] - v[:, None] * s[:, None] * f


def _random_colour(g, n, hue, sat, val) -> torch.Tensor:
    return hsv_to_rgb(_u(g, n, *hue) % 1.0, _u(g, n, *sat), _u(g, n, *val))


def _pick(g, n: int, options: torch.Tensor) -> torch.Tensor:
    """One row of ``options`` (k×3) per image, uniformly."""
    return options[torch.randint(len(options), (n,), generator=g)]


def _smooth_noise(g, n: int, size: int, cells: int = 4) -> torch.Tensor:
    """Low-frequency noise in [-1, 1], n×size×size: a random cells×cells grid, bilinearly upsampled."""
    coarse = torch.rand(n, 1, cells, cells, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]


class _Canvas:
    """A batch of images being painted, with pixel coordinates X (right) and Y (down) in [0, 1]."""

    def __init__(self, n: int, size: int, track: bool = False):
        self.n, self.size = n, size
        t = (torch.arange(size) + 0.5) / size
        self.Y, self.X = t.view(1, size, 1), t.view(1, 1, size)
        self.img = torch.zeros(n, 3, size, size)
        # the per-pixel class map (0 = background), kept only when asked: painting with ``label`` set
        # marks the painted pixels; it reads no random numbers, so the images are the same either way
        self.seg = torch.zeros(n, size, size, dtype=torch.uint8) if track else None
        self.label: int | None = None
        self.draw_objects = True

    def paint(self, mask: torch.Tensor, colour: torch.Tensor, shade: torch.Tensor | float = 1.0, alpha: float = 1.0):
        """Composite ``colour`` (n×3) where ``mask`` (n×H×W bool/float) is set, times ``shade`` (n×H×W)."""
        m = mask.float().unsqueeze(1) * alpha
        layer = colour.view(-1, 3, 1, 1) * (shade.unsqueeze(1) if torch.is_tensor(shade) else shade)
        self.img = self.img * (1 - m) + layer * m
        if self.seg is not None and self.label is not None:
            covered = mask.bool().expand(self.n, self.size, self.size)
            self.seg.masked_fill_(covered, self.label)


# ----------------------------------------------------------------------------------------------
# Shapes in object coordinates: u to the right, v up, both in units of the object's size,
# with the object standing on v = 0 and centred on u = 0.
# ----------------------------------------------------------------------------------------------


def _rect(u, v, u0, u1, v0, v1):
    return (u >= _c(u0)) & (u <= _c(u1)) & (v >= _c(v0)) & (v <= _c(v1))


def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - _c(cu)) / _c(ru)) ** 2 + ((v - _c(cv)) / _c(rv)) ** 2 <= 1


def _trapezoid(u, v, cu, v0, v1, half_bottom, half_top):
    """Between heights v0 < v1, half-width going linearly from half_bottom (at v0) to half_top (at v1)."""
    t = (v - _c(v0)) / _c(v1 - v0)
    half = _c(half_bottom) + (_c(half_top) - _c(half_bottom)) * t
    return (t >= 0) & (t <= 1) & ((u - _c(cu)).abs() <= half)


def _full(n, value):
    return torch.full((n,), float(value))


def _draw_house(cv: _Canvas, g, u, v, shade):
    n = u.shape[0]
    w = _u(g, n, 0.32, 0.5)
    wall_h = _u(g, n, 0.4, 0.6)
    roof_h = _u(g, n, 0.25, 0.4)
    wall = _random_colour(g, n, (0.02, 0.16), (0.2, 0.6), (0.55, 0.95))
    roof = _random_colour(g, n, (-0.03, 0.08), (0.4, 0.8), (0.25, 0.6))
    cv.paint(_rect(u, v, -w, w, _full(n, 0), wall_h), wall, shade)
    cv.paint(_trapezoid(u, v, _full(n, 0), wall_h, wall_h + roof_h, w + 0.08, _full(n, 0.0)), roof, shade)
    door_u = _u(g, n, -0.5, 0.5) * w * 0.6
    cv.paint(
        _rect(u, v, door_u - 0.07, door_u + 0.07, _full(n, 0), _full(n, 0.24)),
        _random_colour(g, n, (0.0, 0.1), (0.4, 0.7), (0.15, 0.35)),
        shade,
    )
    glass = _random_colour(g, n, (0.12, 0.6), (0.2, 0.6), (0.7, 1.0))
    for side in (-1, 1):
        wu = _full(n, side * 0.5) * w
        wv = wall_h * 0.65
        cv.paint(
            _rect(u, v, wu - 0.06, wu + 0.06, wv - 0.06, wv + 0.06) & ((wu - door_u).abs().view(-1, 1, 1) > 0.14),
            glass,
            shade,
        )


def _draw_tree(cv: _Canvas, g, u, v, shade):
    n = u.shape[0]
    trunk_h = _u(g, n, 0.25, 0.45)
    trunk_w = _u(g, n, 0.04, 0.08)
    bark = _random_colour(g, n, (0.05, 0.1), (0.4, 0.7), (0.2, 0.4))
    autumn = torch.rand(n, generator=g) < 0.15
    leaves = torch.where(
        autumn[:, None],
        _random_colour(g, n, (0.03, 0.12), (0.6, 0.9), (0.5, 0.85)),
        _random_colour(g, n, (0.22, 0.4), (0.45, 0.9), (0.3, 0.7)),
    )
    cv.paint(_rect(u, v, -trunk_w, trunk_w, _full(n, 0), trunk_h + 0.1), bark, shade)
    conifer = (torch.rand(n, generator=g) < 0.4).view(-1, 1, 1)
    r = _u(g, n, 0.22, 0.34)
    round_crown = _ellipse(u, v, _full(n, 0), trunk_h + r * 0.8, r * _u(g, n, 0.85, 1.25), r)
    cone = _trapezoid(
        u, v, _full(n, 0), trunk_h * 0.5, trunk_h + _u(g, n, 0.6, 0.8), _u(g, n, 0.25, 0.35), _full(n, 0.0)
    )
    crown = torch.where(conifer, cone, round_crown)
    texture = 1 + 0.18 * torch.sin(u * 60 + v * 37) * torch.sin(v * 55 - u * 20)
    cv.paint(crown, leaves, shade * texture)


def _draw_car(cv: _Canvas, g, u, v, shade):
    n = u.shape[0]
    half = _u(g, n, 0.45, 0.65)
    body = _random_colour(g, n, (0.0, 1.0), (0.5, 1.0), (0.4, 0.9))
    shift = _u(g, n, -0.12, 0.12)
    cabin_h = _u(g, n, 0.16, 0.24)
    cv.paint(_trapezoid(u, v, shift, _full(n, 0.33), 0.33 + cabin_h, half * 0.6, half * 0.38), body, shade)
    cv.paint(
        _trapezoid(u, v, shift, _full(n, 0.36), 0.3 + cabin_h, half * 0.5, half * 0.32),
        _random_colour(g, n, (0.5, 0.62), (0.1, 0.4), (0.6, 0.9)),
        shade,
    )
    cv.paint(
        _rect(u, v, -half, half, _full(n, 0.1), _full(n, 0.35))
        & ~(_ellipse(u, v, -half, _full(n, 0.35), _full(n, 0.08), _full(n, 0.08)) & (u < _c(-half) + 0.08)),
        body,
        shade,
    )
    lamp = _random_colour(g, n, (0.1, 0.16), (0.1, 0.5), (0.9, 1.0))
    cv.paint(_rect(u, v, half - 0.05, half, _full(n, 0.24), _full(n, 0.3)), lamp)
    for side in (-1, 1):
        cu = side * half * 0.62
        cv.paint(_ellipse(u, v, cu, _full(n, 0.11), _full(n, 0.11), _full(n, 0.11)), torch.full((n, 3), 0.08))
        cv.paint(_ellipse(u, v, cu, _full(n, 0.11), _full(n, 0.045), _full(n, 0.045)), torch.full((n, 3), 0.6))


def _draw_person(cv: _Canvas, g, u, v, shade):
    n = u.shape[0]
    trousers = _random_colour(g, n, (0.55, 0.7), (0.2, 0.7), (0.1, 0.45))
    shirt = _random_colour(g, n, (0.0, 1.0), (0.4, 0.95), (0.35, 0.95))
    skin = _random_colour(g, n, (0.04, 0.1), (0.3, 0.6), (0.35, 0.95))
    stride = _u(g, n, 0.0, 0.07)
    for side in (-1, 1):
        cv.paint(
            _trapezoid(u, v, side * (0.05 + stride), _full(n, 0), _full(n, 0.42), _full(n, 0.04), _full(n, 0.045)),
            trousers,
            shade,
        )
    cv.paint(_trapezoid(u, v, _full(n, 0), _full(n, 0.4), _full(n, 0.74), _full(n, 0.12), _full(n, 0.14)), shirt, shade)
    arm_up = (torch.rand(n, generator=g) < 0.3).view(-1, 1, 1)
    for side in (-1, 1):
        down = _rect(u, v, _full(n, side * 0.17 - 0.035), _full(n, side * 0.17 + 0.035), _full(n, 0.42), _full(n, 0.72))
        up = _rect(u, v, _full(n, side * 0.17 - 0.035), _full(n, side * 0.17 + 0.035), _full(n, 0.68), _full(n, 0.98))
        cv.paint(torch.where(arm_up & (side > 0), up, down), shirt, shade)
    cv.paint(_ellipse(u, v, _full(n, 0), _full(n, 0.85), _full(n, 0.095), _full(n, 0.1)), skin, shade)
    hair = _random_colour(g, n, (0.02, 0.12), (0.3, 0.8), (0.05, 0.5))
    cv.paint(_ellipse(u, v, _full(n, 0), _full(n, 0.89), _full(n, 0.1), _full(n, 0.075)) & (v > 0.88), hair, shade)


def _draw_boat(cv: _Canvas, g, u, v, shade):
    n = u.shape[0]
    half = _u(g, n, 0.4, 0.6)
    water = _random_colour(g, n, (0.52, 0.62), (0.4, 0.8), (0.35, 0.75))
    cv.paint(_ellipse(u, v, _full(n, 0), _full(n, 0.02), half * 1.6, _full(n, 0.07)), water, shade)
    hull = _random_colour(g, n, (0.0, 1.0), (0.0, 0.8), (0.25, 0.95))
    cv.paint(_trapezoid(u, v, _full(n, 0), _full(n, 0.02), _full(n, 0.2), half - 0.14, half), hull, shade)
    mast = _u(g, n, -0.1, 0.05)
    cv.paint(_rect(u, v, mast - 0.02, mast + 0.02, _full(n, 0.2), _full(n, 0.98)), torch.full((n, 3), 0.3), shade)
    sail = _random_colour(g, n, (0.0, 1.0), (0.0, 0.7), (0.75, 1.0))
    t = (v - 0.28) / 0.66
    inside = (t >= 0) & (t <= 1) & (u >= _c(mast) + 0.03) & (u <= _c(mast) + 0.03 + _c(half * 0.85) * (1 - t))
    cv.paint(inside, sail, shade)


def _draw_flower(cv: _Canvas, g, u, v, shade):
    n = u.shape[0]
    green = _random_colour(g, n, (0.25, 0.38), (0.5, 0.9), (0.3, 0.65))
    height = _u(g, n, 0.5, 0.7)
    cv.paint(_rect(u, v, _full(n, -0.025), _full(n, 0.025), _full(n, 0), height), green, shade)
    for side in (-1, 1):
        cv.paint(_ellipse(u, v, _full(n, side * 0.09), height * 0.4, _full(n, 0.09), _full(n, 0.035)), green, shade)
    petal = hsv_to_rgb(
        torch.where(torch.rand(n, generator=g) < 0.5, _u(g, n, -0.05, 0.15) % 1, _u(g, n, 0.72, 0.95)),
        _u(g, n, 0.55, 1.0),
        _u(g, n, 0.7, 1.0),
    )
    k = torch.randint(5, 8, (n,), generator=g).float()
    phase = _u(g, n, 0, 2 * math.pi)
    du, dv = u, v - _c(height + 0.12)
    angle = torch.atan2(dv, du)
    radius = torch.sqrt(du**2 + dv**2)
    petals = radius <= 0.1 + 0.07 * torch.cos(_c(k) * angle + _c(phase)).clamp(min=0)
    cv.paint(petals, petal, shade)
    cv.paint(radius <= 0.055, _random_colour(g, n, (0.08, 0.16), (0.6, 1.0), (0.35, 0.95)), shade)


def _draw_mushroom(cv: _Canvas, g, u, v, shade):
    n = u.shape[0]
    stem_w = _u(g, n, 0.07, 0.12)
    stem_h = _u(g, n, 0.3, 0.45)
    cv.paint(
        _trapezoid(u, v, _full(n, 0), _full(n, 0), stem_h, stem_w * 1.2, stem_w),
        _random_colour(g, n, (0.08, 0.15), (0.05, 0.25), (0.75, 0.95)),
        shade,
    )
    red = torch.rand(n, generator=g) < 0.55
    cap_colour = torch.where(
        red[:, None],
        _random_colour(g, n, (-0.02, 0.03), (0.75, 1.0), (0.6, 0.95)),
        _random_colour(g, n, (0.05, 0.1), (0.4, 0.8), (0.3, 0.65)),
    )
    ru, rv = _u(g, n, 0.28, 0.42), _u(g, n, 0.18, 0.3)
    cap = _ellipse(u, v, _full(n, 0), stem_h - 0.02, ru, rv) & (v >= _c(stem_h - 0.02))
    cv.paint(cap, cap_colour, shade)
    spots = torch.zeros_like(cap)
    for du, dv in ((-0.5, 0.35), (0.1, 0.65), (0.55, 0.3)):
        spots |= _ellipse(u, v, ru * du, stem_h + rv * dv, _full(n, 0.045), _full(n, 0.04))
    cv.paint(spots & cap & red.view(-1, 1, 1), torch.full((n, 3), 0.95), shade)


def _draw_lamp_post(cv: _Canvas, g, u, v, shade):
    n = u.shape[0]
    metal = _random_colour(g, n, (0.3, 0.6), (0.0, 0.4), (0.08, 0.35))
    height = _u(g, n, 0.85, 1.0)
    cv.paint(_trapezoid(u, v, _full(n, 0), _full(n, 0), _full(n, 0.08), _full(n, 0.08), _full(n, 0.04)), metal, shade)
    cv.paint(_rect(u, v, _full(n, -0.022), _full(n, 0.022), _full(n, 0), height), metal, shade)
    light = _random_colour(g, n, (0.1, 0.17), (0.2, 0.7), (0.9, 1.0))
    glow = torch.exp(-((u**2 + (v - _c(height - 0.02)) ** 2) / 0.02))
    cv.img = cv.img + 0.25 * glow.unsqueeze(1) * light.view(-1, 3, 1, 1)
    cv.paint(_ellipse(u, v, _full(n, 0), height - 0.03, _full(n, 0.06), _full(n, 0.06)), light)
    cv.paint(_trapezoid(u, v, _full(n, 0), height, height + 0.07, _full(n, 0.1), _full(n, 0.03)), metal, shade)


def _draw_cup(cv: _Canvas, g, u, v, shade):
    n = u.shape[0]
    colour = _random_colour(g, n, (0.0, 1.0), (0.0, 0.9), (0.45, 1.0))
    top, half = _u(g, n, 0.38, 0.5), _u(g, n, 0.18, 0.25)
    cv.paint(_ellipse(u, v, _full(n, 0), _full(n, 0.02), half * 1.6, _full(n, 0.035)), torch.full((n, 3), 0.85), shade)
    ring = _ellipse(u, v, half * 1.05, top * 0.55, half * 0.5, top * 0.28) & ~_ellipse(
        u, v, half * 1.05, top * 0.55, half * 0.25, top * 0.15
    )
    cv.paint(ring, colour, shade)
    cv.paint(_trapezoid(u, v, _full(n, 0), _full(n, 0.03), top, half * 0.75, half), colour, shade)
    cv.paint(_ellipse(u, v, _full(n, 0), top, half, _full(n, 0.04)), colour * 0.5 + 0.1, shade)
    drink = _random_colour(g, n, (0.05, 0.1), (0.5, 0.9), (0.15, 0.45))
    cv.paint(_ellipse(u, v, _full(n, 0), top, half * 0.85, _full(n, 0.03)), drink)


def _draw_snowman(cv: _Canvas, g, u, v, shade):
    n = u.shape[0]
    snow = _random_colour(g, n, (0.5, 0.65), (0.0, 0.12), (0.85, 1.0))
    r1 = _u(g, n, 0.2, 0.26)
    r2, r3 = r1 * 0.75, r1 * 0.55
    v2 = 2 * r1 + r2 * 0.8
    v3 = v2 + r2 + r3 * 0.8
    for r, cvv in ((r1, r1), (r2, v2), (r3, v3)):
        cv.paint(_ellipse(u, v, _full(n, 0), cvv, r, r), snow, shade)
    black = torch.full((n, 3), 0.05)
    for side in (-1, 1):
        cv.paint(_ellipse(u, v, side * r3 * 0.4, v3 + r3 * 0.25, _full(n, 0.025), _full(n, 0.025)), black)
    nose_len = _c(r3 * 0.9)
    nose = (u > 0) & (u < nose_len) & ((v - _c(v3)).abs() < 0.035 * (1 - u / nose_len))
    cv.paint(nose, torch.tensor([[0.95, 0.45, 0.05]]).expand(n, 3))
    scarf = _random_colour(g, n, (0.0, 1.0), (0.6, 1.0), (0.5, 0.9))
    cv.paint(_rect(u, v, -r3 * 1.05, r3 * 1.05, v3 - r3 - 0.04, v3 - r3 + 0.03), scarf, shade)
    hat = (torch.rand(n, generator=g) < 0.6).view(-1, 1, 1)
    cv.paint(hat & _rect(u, v, -r3 * 0.7, r3 * 0.7, v3 + r3 * 0.7, v3 + r3 * 1.6), black)
    cv.paint(hat & _rect(u, v, -r3 * 1.05, r3 * 1.05, v3 + r3 * 0.7, v3 + r3 * 0.8), black)


_DRAW = [
    _draw_house,
    _draw_tree,
    _draw_car,
    _draw_person,
    _draw_boat,
    _draw_flower,
    _draw_mushroom,
    _draw_lamp_post,
    _draw_cup,
    _draw_snowman,
]
# (min, max) object size as a fraction of the image height, per class (people are tall and thin, …)
_SIZE = [
    (0.5, 0.8),
    (0.55, 0.85),
    (0.5, 0.75),
    (0.55, 0.85),
    (0.5, 0.75),
    (0.55, 0.8),
    (0.5, 0.75),
    (0.6, 0.85),
    (0.55, 0.8),
    (0.5, 0.75),
]

_SKIES = torch.tensor(
    [
        [[0.25, 0.45, 0.85], [0.7, 0.85, 1.0]],  # clear day: deep blue above, pale at the horizon
        [[0.55, 0.58, 0.62], [0.8, 0.82, 0.85]],  # overcast
        [[0.35, 0.3, 0.6], [0.98, 0.7, 0.45]],  # dusk
    ]
)
_GROUNDS = torch.tensor([[0.3, 0.55, 0.2], [0.45, 0.33, 0.2], [0.85, 0.75, 0.5], [0.88, 0.9, 0.95], [0.4, 0.45, 0.3]])


def _draw_object(cv: _Canvas, g, idx: torch.Tensor, labels: torch.Tensor, cx, base, size, dim: float = 1.0):
    """Draw, for each image i in ``idx``, an object of class ``labels[i]`` at (cx[i], base[i]) with size[i].

    With a tracking canvas, every pixel an object paints is marked ``1 + class`` in ``cv.seg``."""
    for c in range(len(CLASSES)):
        sel = idx[labels[idx] == c]
        if len(sel) == 0:
            continue
        sub = _Canvas(len(sel), cv.size, track=cv.seg is not None)
        sub.img = cv.img[sel]
        if cv.seg is not None:
            sub.seg, sub.label = cv.seg[sel], c + 1
        s = _c(size[sel])
        u = (cv.X - _c(cx[sel])) / s
        v = (_c(base[sel]) - cv.Y) / s
        shade = (0.75 + 0.35 * v.clamp(0, 1)) * dim  # light from above: tops brighter than bottoms
        _DRAW[c](sub, g, u, v, shade)
        if cv.draw_objects:
            cv.img[sel] = sub.img
        if cv.seg is not None:
            cv.seg[sel] = sub.seg


def _downsample_classes(seg: torch.Tensor, factor: int, num_classes: int) -> torch.Tensor:
    """A class map n×H×W → n×(H/f)×(W/f): each output pixel takes the class covering most of its f×f
    block of the supersampled canvas (ties go to the lower class index, so to the background first)."""
    counts = F.avg_pool2d(F.one_hot(seg.long(), num_classes).permute(0, 3, 1, 2).float(), factor)
    return counts.argmax(dim=1).to(torch.uint8)


def _box_of(masks: torch.Tensor) -> torch.Tensor:
    """Pixel boxes (x0, y0, x1, y1), ends exclusive, of the set pixels of n×H×W bool masks (0s if empty)."""
    n = masks.shape[0]
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # n×H, n×W
    boxes = torch.zeros(n, 4, dtype=torch.long)
    for i in range(n):
        ys, xs = rows[i].nonzero().flatten(), cols[i].nonzero().flatten()
        if len(ys):
            boxes[i] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return boxes


def _render(n: int, seed: int, size: int, labels: torch.Tensor, track: bool = False, draw_objects: bool = True):
    """Render ``n`` scenes (uint8 n×3×S×S); with ``track``, also their class maps (uint8 n×S×S).

    ``draw_objects=False`` renders the same scenes with their objects left out (the same random
    numbers are drawn, so everything else is identical): the background the objects cover, which
    the tests compare the masks with."""
    g = torch.Generator().manual_seed(seed)
    big = size * _SUPERSAMPLE
    cv = _Canvas(n, big, track=track)
    cv.draw_objects = draw_objects
    all_idx = torch.arange(n)
    # sky with a vertical gradient, ground with a texture; horizon slightly tilted
    horizon = _c(_u(g, n, 0.35, 0.65)) + _c(_u(g, n, -0.06, 0.06)) * (cv.X - 0.5)
    sky = _SKIES[torch.randint(len(_SKIES), (n,), generator=g)] * _u(g, n, 0.85, 1.1).view(-1, 1, 1)
    t = (cv.Y / horizon.clamp(min=0.05)).clamp(0, 1).unsqueeze(1)  # 0 at the top, 1 at the horizon
    sky_img = sky[:, 0].view(-1, 3, 1, 1) * (1 - t) + sky[:, 1].view(-1, 3, 1, 1) * t
    ground = _pick(g, n, _GROUNDS) * _u(g, n, 0.75, 1.05)[:, None] + (torch.rand(n, 3, generator=g) - 0.5) * 0.12
    depth = ((cv.Y - horizon) / (1 - horizon).clamp(min=0.05)).clamp(0, 1)
    ground_shade = (
        (1.0 - 0.25 * depth) * (1 + 0.15 * _smooth_noise(g, n, big, 6)) * (1 + 0.06 * _smooth_noise(g, n, big, 16))
    )
    ground_img = ground.view(-1, 3, 1, 1) * ground_shade.unsqueeze(1)
    below = (cv.Y >= horizon).unsqueeze(1).float()
    cv.img = sky_img * (1 - below) + ground_img * below
    # clouds in the sky
    for _ in range(3):
        on = (torch.rand(n, generator=g) < 0.5).view(-1, 1, 1)
        cloud = _ellipse(
            cv.X + 0 * cv.Y,
            cv.Y + 0 * cv.X,
            _u(g, n, 0, 1),
            _c(horizon.mean(dim=(1, 2))).flatten() * _u(g, n, 0.15, 0.6),
            _u(g, n, 0.08, 0.2),
            _u(g, n, 0.03, 0.06),
        )
        cv.paint(on & cloud & (cv.Y < horizon), torch.full((n, 3), 0.97), alpha=0.8)
    # rocks on the ground
    for _ in range(3):
        on = (torch.rand(n, generator=g) < 0.45).view(-1, 1, 1)
        hy = horizon.mean(dim=(1, 2))
        ry = _u(g, n, 0.015, 0.04)
        rock = _ellipse(
            cv.X + 0 * cv.Y,
            cv.Y + 0 * cv.X,
            _u(g, n, 0, 1),
            hy + (1 - hy) * _u(g, n, 0.1, 1.0),
            ry * _u(g, n, 1.2, 2.5),
            ry,
        )
        grey = _u(g, n, 0.25, 0.6)[:, None] * torch.tensor([[1.0, 0.97, 0.92]])
        cv.paint(on & rock, grey, 1.1 - 0.4 * (cv.Y > 0).float())
    hy = horizon.mean(dim=(1, 2))
    # a smaller object of another class further back, in a third of the scenes
    other = (labels + torch.randint(1, len(CLASSES), (n,), generator=g)) % len(CLASSES)
    has_other = torch.rand(n, generator=g) < 0.33
    o_size = _u(g, n, 0.2, 0.3)
    o_base = hy + (1 - hy) * _u(g, n, 0.05, 0.3)
    o_cx = _u(g, n, 0.05, 0.95)
    _draw_object(cv, g, all_idx[has_other], other, o_cx, o_base, o_size, dim=0.9)
    # the labelled object, standing on the ground, with its shadow
    lo = torch.tensor([s[0] for s in _SIZE])[labels]
    hi = torch.tensor([s[1] for s in _SIZE])[labels]
    size_ = lo + (hi - lo) * torch.rand(n, generator=g)
    base = hy + (1 - hy) * _u(g, n, 0.45, 1.0) + 0.03
    cx = _u(g, n, 0.22, 0.78)
    shadow = _ellipse(
        cv.X + 0 * cv.Y, cv.Y + 0 * cv.X, cx + size_ * _u(g, n, 0.0, 0.15), base, size_ * 0.45, size_ * 0.06
    )
    cv.paint(shadow, torch.zeros(n, 3), alpha=0.3)
    _draw_object(cv, g, all_idx, labels, cx, base, size_)
    # lighting of the whole scene: brightness and a colour tint; then down-sample and sensor noise
    light = _u(g, n, 0.75, 1.1)[:, None] * (1 + (torch.rand(n, 3, generator=g) - 0.5) * 0.15)
    img = cv.img * light.view(-1, 3, 1, 1)
    img = F.avg_pool2d(img, _SUPERSAMPLE)
    img = img + torch.randn(img.shape, generator=g) * 0.02
    img = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    if not track:
        return img
    return img, _downsample_classes(cv.seg, _SUPERSAMPLE, 1 + len(CLASSES))


def generate(n: int, seed: int, image_size: int = 32, masks: bool = False, _draw_objects: bool = True):
    """``n`` scenes: uint8 images N×3×S×S and int64 labels N, deterministic in (n, seed, image_size).

    Labels are balanced (each class ``n // 10`` or one more times) and shuffled.

    With ``masks=True`` it returns ``(images, labels, masks, boxes)``: the same images (bit for bit:
    the masks draw no random numbers), ``masks`` uint8 N×S×S, the class of every pixel (0 = background:
    sky, ground, clouds, rocks, shadows; ``1 + c`` = an object of class ``c``, the labelled object and
    the smaller clutter object alike; :data:`MASK_CLASSES` names them), and ``boxes`` int64 N×4, the
    labelled object's box ``(x0, y0, x1, y1)`` in pixels, ends exclusive: the extent of its pixels
    ``masks == 1 + label`` (the clutter object is always of another class).
    """
    if n < 0 or image_size < 8:
        raise DataError(f"cannot generate {n} images of size {image_size} (need n ≥ 0 and size ≥ 8)")
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    labels = labels[torch.randperm(n, generator=g)]
    chunks, seg_chunks = [], []
    for i, start in enumerate(range(0, n, _CHUNK)):
        part = labels[start : start + _CHUNK]
        out = _render(len(part), seed * 1_000_003 + i, image_size, part, track=masks, draw_objects=_draw_objects)
        chunks.append(out[0] if masks else out)
        if masks:
            seg_chunks.append(out[1])
    images = torch.cat(chunks) if chunks else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
    if not masks:
        return images, labels
    seg = torch.cat(seg_chunks) if seg_chunks else torch.zeros(0, image_size, image_size, dtype=torch.uint8)
    return images, labels, seg, _box_of(seg == (labels + 1).view(-1, 1, 1).to(torch.uint8))


def _cache_dir(root, seed, n_train, n_test, image_size) -> Path:
    return Path(root) / f"shapes-v1-seed{seed}-n{n_train}-{n_test}-s{image_size}"


def _load_masks(folder: Path, split: str, n: int, seed: int, image_size: int, images: torch.Tensor):
    """The split's masks and boxes, cached beside its images (``<split>-masks.pt``); the images file is never
    rewritten, so data caches and runs made before masks existed stay valid."""
    path = folder / f"{split}-masks.pt"
    if path.is_file():
        try:
            state = torch.load(path, weights_only=True)
            if state["masks"].shape == (len(images), image_size, image_size) and state["boxes"].shape == (
                len(images),
                4,
            ):
                return state["masks"], state["boxes"]
        except Exception:
            pass  # interrupted or foreign write: regenerate
    again, _, masks, boxes = generate(n, seed, image_size, masks=True)
    if not torch.equal(again, images):
        raise DataError(f"the cached images in {folder} differ from what this sslbook generates; delete the folder")
    save_atomic({"masks": masks, "boxes": boxes}, path)
    return masks, boxes


def load_shapes(
    split: str, root, seed: int = 0, n_train: int = 10000, n_test: int = 2000, image_size: int = 32, masks: bool = False
) -> TensorImageDataset:
    """The ``train`` or ``test`` split of the shapes data set, generated once and cached under ``root``.

    The test split uses a seed derived from ``seed``, so the splits never share an image. The cache
    is written atomically and regenerated if it is missing or unreadable. ``info.mean``/``info.std``
    are the training split's per-channel statistics (in [0, 1] units), the same for both splits.

    With ``masks=True`` the data set is a :class:`~sslbook.data.base.SegmentedImageDataset`: the same
    images with each one's per-pixel class mask and the labelled object's box (see :func:`generate`),
    generated on first use and cached in their own file.
    """
    if split not in ("train", "test"):
        raise DataError(f"shapes has splits 'train' and 'test', not {split!r}")
    folder = _cache_dir(root, seed, n_train, n_test, image_size)
    path = folder / f"{split}.pt"
    state = None
    if path.is_file():
        try:
            state = torch.load(path, weights_only=True)
            if state["images"].shape[1:] != (3, image_size, image_size):
                state = None
        except Exception:
            state = None  # a cache from an interrupted or foreign write: regenerate it
    fresh = None
    if state is None:
        n, s = (n_train, seed) if split == "train" else (n_test, seed + 7919)
        if masks:  # one pass draws both (the same images as without masks)
            images, labels, *fresh = generate(n, s, image_size, masks=True)
            save_atomic({"masks": fresh[0], "boxes": fresh[1]}, folder / f"{split}-masks.pt")
        else:
            images, labels = generate(n, s, image_size)
        if split == "train":
            x = images.float() / 255
            mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
        else:
            train = load_shapes("train", root, seed, n_train, n_test, image_size)
            mean, std = torch.tensor(train.info.mean), torch.tensor(train.info.std)
        state = {"images": images, "labels": labels, "mean": mean, "std": std}
        save_atomic(state, path)
    info = DataInfo("shapes", list(CLASSES), image_size, tuple(state["mean"].tolist()), tuple(state["std"].tolist()))
    if not masks:
        return TensorImageDataset(state["images"], state["labels"], info)
    info.extra["mask_classes"] = list(MASK_CLASSES)
    n, s = (n_train, seed) if split == "train" else (n_test, seed + 7919)
    seg, boxes = fresh or _load_masks(folder, split, n, s, image_size, state["images"])
    return SegmentedImageDataset(state["images"], state["labels"], info, seg, boxes)

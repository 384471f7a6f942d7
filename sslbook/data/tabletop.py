"""A second generated domain, ``tabletop``: flat objects of five other classes on patterned indoor surfaces.

It exists so that a backbone pre-trained on ``shapes`` (outdoor scenes, ten object classes) can be
evaluated on *another* data set without a download: other classes, other textures, other image
statistics. Each 32×32 image (drawn at twice the size and averaged down, as ``shapes``) shows:

- **a surface**: stripes at a random angle, a checkerboard or wood-like grain, in two random colours
  (a table cloth, tiles, a desk), no horizon, no sky, no light from above;
- **one object of the labelled class** — ``disc``, ``square``, ``triangle``, ``ring``, ``cross`` — at a
  random position, size and rotation, in a random saturated colour with a darker outline;
- **clutter**: in half the scenes a smaller object of another class; and sensor noise.

Like ``shapes`` it is deterministic in its seed, cached under the data folder, and, with
``masks=True``, gives each image's per-pixel class mask (0 = surface) and the labelled object's box.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from sslbook.checkpoint import save_atomic
from sslbook.data.base import DataError, DataInfo, SegmentedImageDataset, TensorImageDataset
from sslbook.data.synthetic import _box_of, _downsample_classes, _u, hsv_to_rgb

CLASSES: list[str] = ["disc", "square", "triangle", "ring", "cross"]
MASK_CLASSES: list[str] = ["surface", *CLASSES]
_SUPERSAMPLE = 2


def _shape_mask(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Object coordinates u, v (n×H×W, unit = the object's radius) → n×H×W bool, per image's class ``kind``."""
    r = torch.sqrt(u**2 + v**2)
    k = kind.view(-1, 1, 1)
    disc = r <= 1
    square = (u.abs() <= 0.85) & (v.abs() <= 0.85)
    triangle = (v >= -0.7) & (v <= 1.0) & (u.abs() <= (1.0 - v) * 0.6)
    ring = (r <= 1) & (r >= 0.55)
    cross = ((u.abs() <= 0.3) & (v.abs() <= 1)) | ((v.abs() <= 0.3) & (u.abs() <= 1))
    out = torch.zeros_like(disc)
    for i, m in enumerate((disc, square, triangle, ring, cross)):
        out |= (k == i) & m
    return out


def _paint_object(img, seg, g, kind, cx, cy, radius, angle, label_value, X, Y):
    n = img.shape[0]
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    dx, dy = (X - cx.view(-1, 1, 1)) / radius.view(-1, 1, 1), (Y - cy.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    u, v = c * dx + s * dy, -s * dx + c * dy
    inner = _shape_mask(kind, u / 0.85, v / 0.85)
    outer = _shape_mask(kind, u, v)
    colour = hsv_to_rgb(_u(g, n, 0, 1), _u(g, n, 0.6, 1.0), _u(g, n, 0.6, 1.0))
    for m, col in ((outer, colour * 0.45), (inner, colour)):
        mf = m.float().unsqueeze(1)
        img = img * (1 - mf) + col.view(-1, 3, 1, 1) * mf
    seg = torch.where(outer, label_value.view(-1, 1, 1).to(torch.uint8), seg)
    return img, seg


def generate(n: int, seed: int, image_size: int = 32, masks: bool = False):
    """``n`` tabletop scenes: uint8 images N×3×S×S and int64 balanced labels N (and, with ``masks``, the
    per-pixel masks uint8 N×S×S, 0 = surface, 1 + c = an object of class c, and the labelled object's box)."""
    if n < 0 or image_size < 8:
        raise DataError(f"cannot generate {n} images of size {image_size} (need n ≥ 0 and size ≥ 8)")
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    big = image_size * _SUPERSAMPLE
    t = (torch.arange(big) + 0.5) / big
    Y, X = t.view(1, big, 1), t.view(1, 1, big)
    # the surface: stripes, checkerboard or grain, in two colours
    a, b = (hsv_to_rgb(_u(g, n, 0, 1), _u(g, n, 0.1, 0.6), _u(g, n, 0.3, 0.9)) for _ in range(2))
    pattern = torch.randint(3, (n,), generator=g).view(-1, 1, 1)
    freq = _u(g, n, 3, 8).view(-1, 1, 1)
    theta = _u(g, n, 0, math.pi).view(-1, 1, 1)
    along = X * torch.cos(theta) + Y * torch.sin(theta)
    stripes = (torch.sin(2 * math.pi * freq * along) > 0).float()
    checker = ((torch.floor(X * freq) + torch.floor(Y * freq)) % 2).float()
    grain = 0.5 + 0.5 * torch.sin(2 * math.pi * freq * along + 3 * torch.sin(7 * X * freq / 4 + 2 * Y))
    w = torch.where(pattern == 0, stripes, torch.where(pattern == 1, checker, grain)).unsqueeze(1)
    img = a.view(-1, 3, 1, 1) * w + b.view(-1, 3, 1, 1) * (1 - w)
    seg = torch.zeros(n, big, big, dtype=torch.uint8)
    # clutter: a smaller object of another class in half the scenes, then the labelled object on top
    other = (labels + torch.randint(1, len(CLASSES), (n,), generator=g)) % len(CLASSES)
    has_other = torch.rand(n, generator=g) < 0.5
    o_img, o_seg = _paint_object(
        img,
        seg,
        g,
        other,
        _u(g, n, 0.15, 0.85),
        _u(g, n, 0.15, 0.85),
        _u(g, n, 0.08, 0.13),
        _u(g, n, 0, 2 * math.pi),
        other + 1,
        X,
        Y,
    )
    img = torch.where(has_other.view(-1, 1, 1, 1), o_img, img)
    seg = torch.where(has_other.view(-1, 1, 1), o_seg, seg)
    img, seg = _paint_object(
        img,
        seg,
        g,
        labels,
        _u(g, n, 0.3, 0.7),
        _u(g, n, 0.3, 0.7),
        _u(g, n, 0.16, 0.28),
        _u(g, n, 0, 2 * math.pi),
        labels + 1,
        X,
        Y,
    )
    img = F.avg_pool2d(img, _SUPERSAMPLE)
    img = img + torch.randn(img.shape, generator=g) * 0.03
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    if not masks:
        return images, labels
    seg = _downsample_classes(seg, _SUPERSAMPLE, len(MASK_CLASSES))
    return images, labels, seg, _box_of(seg == (labels + 1).view(-1, 1, 1).to(torch.uint8))


def load_tabletop(
    split: str, root, seed: int = 0, n_train: int = 2000, n_test: int = 1000, image_size: int = 32, masks: bool = False
) -> TensorImageDataset:
    """The ``train`` or ``test`` split of ``tabletop``, generated once (with its masks) and cached under ``root``;
    the test split's seed differs, ``info.mean``/``std`` are the training split's."""
    if split not in ("train", "test"):
        raise DataError(f"tabletop has splits 'train' and 'test', not {split!r}")
    path = Path(root) / f"tabletop-v1-seed{seed}-n{n_train}-{n_test}-s{image_size}" / f"{split}.pt"
    state = None
    if path.is_file():
        try:
            state = torch.load(path, weights_only=True)
        except Exception:
            state = None
    if state is None:
        n, s = (n_train, seed) if split == "train" else (n_test, seed + 7919)
        images, labels, seg, boxes = generate(n, s, image_size, masks=True)
        if split == "train":
            x = images.float() / 255
            mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
        else:
            train = load_tabletop("train", root, seed, n_train, n_test, image_size)
            mean, std = torch.tensor(train.info.mean), torch.tensor(train.info.std)
        state = {"images": images, "labels": labels, "masks": seg, "boxes": boxes, "mean": mean, "std": std}
        save_atomic(state, path)
    info = DataInfo(
        "tabletop",
        list(CLASSES),
        image_size,
        tuple(state["mean"].tolist()),
        tuple(state["std"].tolist()),
        extra={"mask_classes": list(MASK_CLASSES)},
    )
    if masks:
        return SegmentedImageDataset(state["images"], state["labels"], info, state["masks"], state["boxes"])
    return TensorImageDataset(state["images"], state["labels"], info)

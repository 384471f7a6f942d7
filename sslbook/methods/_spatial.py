"""Helpers shared by the methods that need a backbone's spatial feature map (chapter 3)."""

from __future__ import annotations

import torch
from torch import nn


def feature_map_shape(backbone: nn.Module, image_size: int, in_channels: int = 3) -> tuple[int, int]:
    """(channels, side) of ``backbone.feature_maps`` on an image_size² input, found with one dry run."""
    if not hasattr(backbone, "feature_maps"):
        raise ValueError(
            f"this method needs a backbone with a spatial feature map (a `feature_maps(x)` method); "
            f"{type(backbone).__name__} has none: use convnet, convnet_small or a resnet"
        )
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            fmap = backbone.feature_maps(torch.zeros(1, in_channels, image_size, image_size))
    finally:
        backbone.train(was_training)
    return fmap.shape[1], fmap.shape[-1]


def nearest_sizes(fits, size: int, limit: int = 256) -> tuple[int | None, int | None]:
    """The largest image size below ``size`` and the smallest above it (within ``limit`` pixels) for which
    ``fits(s)`` is true; None where there is none. A ``fits`` that raises counts as False. For error
    messages that name the size a method needs."""

    def ok(s: int) -> bool:
        try:
            return bool(fits(s))
        except Exception:
            return False

    below = next((s for s in range(size - 1, max(size - limit, 0), -1) if ok(s)), None)
    above = next((s for s in range(size + 1, size + limit + 1) if ok(s)), None)
    return below, above


def up_block(c_in: int, c_out: int) -> nn.Sequential:
    """×2 upsampling: nearest-neighbour ×2, then conv 3×3, BN, ReLU (cheaper than a 4×4 transposed conv,
    and free of its checkerboard artefacts)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )

"""A control for every frozen-feature score: random weights whose BatchNorm statistics were measured on the data.

A backbone at random initialisation normalises its activations with BatchNorm's running statistics, which
start at mean 0 and variance 1: not what the images produce. Any training, even of a pretext task that
teaches nothing, replaces them with the statistics of the training images, and that alone can lift k-NN
and linear-probe accuracy above the plain random-init floor. :func:`refresh_bn_statistics` gives a random
backbone those statistics and nothing else, so a method can be asked to beat that stronger floor.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.utils.data import Dataset

from sslbook.augment import to_float
from sslbook.cost import module_device
from sslbook.evaluation.common import _iterate
from sslbook.models.normalize import batchnorm_layers


@torch.no_grad()
def refresh_bn_statistics(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    max_images: int | None = None,
) -> nn.Module:
    """Measure the running statistics of every BatchNorm layer of ``backbone`` on ``dataset``'s images.

    Each layer's running mean and variance are reset, then the images are passed through the backbone once,
    in order, with only the BatchNorm layers in training mode (dropout and everything else stay in eval mode)
    and ``momentum=None``, so each statistic becomes the plain average of its per-batch values over the data
    (a cumulative average, not an exponential one that would favour the last batches). No parameter changes
    and no gradient is computed; labels are not read. Each layer's momentum is restored afterwards.

    Args:
        backbone: images N×3×H×W float in [0, 1] → features (the convention of :mod:`sslbook.evaluation`).
        dataset: yields ``(uint8 image 3×H×W, label)``, usually the training split.
        max_images: use only the first this many images (default all).

    Returns:
        ``backbone`` itself (changed in place), in eval mode. A backbone without BatchNorm (a ViT, say) is
        returned unchanged, with a warning saying so.
    """
    layers = batchnorm_layers(backbone)
    if not layers:
        warnings.warn(
            f"{type(backbone).__name__} has no BatchNorm layer with running statistics: returned unchanged",
            stacklevel=2,
        )
        return backbone.eval()
    device = torch.device(device) if device is not None else module_device(backbone)
    backbone.to(device).eval()
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        for images, _ in _iterate(dataset, batch_size):
            if max_images is not None:
                images = images[: max_images - seen]
            if len(images) == 0 or (len(images) == 1 and seen > 0):  # a batch of one has no variance to measure
                break
            backbone(to_float(images.to(device)))
            seen += len(images)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        backbone.eval()
    if seen == 0:
        raise ValueError("refresh_bn_statistics: the data set yielded no image")
    return backbone

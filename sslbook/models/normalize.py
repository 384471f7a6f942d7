"""The first layer of every backbone: the data set's channel normalisation (its own module, so that the
CNNs of :mod:`sslbook.models.backbones` and the ViT of :mod:`sslbook.models.vit` share it without
importing each other); and :func:`batchnorm_layers`, the BatchNorm layers whose running statistics a
module keeps (what the evaluation's BN-refreshed control measures and BigBiGAN's encoder holds)."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x − mean) / std per channel; x: N×3×H×W in [0, 1]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``module`` (1-D, 2-D, 3-D and synchronised) that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]

"""The first layer of every backbone: the data set's channel normalisation (its own module, so that the
CNNs of :mod:`sslbook.models.backbones` and the ViT of :mod:`sslbook.models.vit` share it without
importing each other)."""

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

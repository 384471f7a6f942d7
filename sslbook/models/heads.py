"""Heads as data: a head is a list of layers ``(in, out, batch_norm, activation)``.

    >>> head([(512, 2048, True, True), (2048, 128, False, False)])   # SimCLR's projection g(·)

Each method's head is a few lines that quote the paper's description of it.
"""

from __future__ import annotations

from torch import nn

Layer = tuple[int, int, bool, bool]


class MLP(nn.Sequential):
    """Linear layers, each optionally followed by BatchNorm1d and ReLU."""

    def __init__(self, layers: list[Layer]):
        modules: list[nn.Module] = []
        for d_in, d_out, batch_norm, activation in layers:
            modules.append(nn.Linear(d_in, d_out, bias=not batch_norm))
            if batch_norm:
                modules.append(nn.BatchNorm1d(d_out))
            if activation:
                modules.append(nn.ReLU(inplace=True))
        super().__init__(*modules)
        self.out_dim = layers[-1][1]


def head(layers: list[Layer]) -> MLP:
    return MLP(layers)

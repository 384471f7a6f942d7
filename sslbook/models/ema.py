"""Momentum (EMA) copies of networks: BYOL's target, MoCo's key encoder, DINO's teacher.

    >>> target = momentum_copy(online)            # same weights, no gradients
    >>> ema_update_(target, online, m=0.99)       # θ_t ← m·θ_t + (1 − m)·θ_o, after each optimiser step

The update is one fused ``torch._foreach_lerp_`` over the whole parameter list, not a Python loop over
parameters; buffers (BatchNorm running statistics) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient (it is updated by :func:`ema_update_`)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, m: float) -> None:
    """θ_target ← m·θ_target + (1 − m)·θ_online, in place; buffers are copied from ``online``."""
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {m}")
    t_params = list(target.parameters())
    o_params = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ValueError("target and online networks have different parameter lists")
    # one fused in-place op over the whole list: lerp(θ_t, θ_o, 1 − m) = θ_t + (1 − m)(θ_o − θ_t) = m θ_t + (1 − m) θ_o
    # (exact at m = 0 and m = 1)
    torch._foreach_lerp_(t_params, o_params, 1.0 - m)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)

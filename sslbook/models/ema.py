"""Momentum (EMA) copies of networks: BYOL's target, MoCo's key encoder, DINO's teacher.

    >>> target = momentum_copy(online)            # same weights, no gradients
    >>> ema_update_(target, online, m=0.99)       # θ_t ← m·θ_t + (1 − m)·θ_o, after each optimiser step

The update is two fused ``torch._foreach`` operations over the whole parameter list, not a Python
loop over parameters; buffers (BatchNorm running statistics) are copied.
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
    torch._foreach_mul_(t_params, m)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - m)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)

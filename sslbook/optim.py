"""Optimisers: SGD, AdamW and LARS, with no weight decay on biases and normalisation parameters."""

from __future__ import annotations

import torch
from torch import nn

from sslbook.methods.base import Method


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weights of linear/conv layers (decayed) apart from biases and norm parameters (not decayed).

    A method can give some parameters their own learning rate with :meth:`Method.set_lr`, which sets
    ``p.lr_scale`` (a multiple of the scheduled rate) and ``p.fixed_lr = True`` (the peak rate at
    every step, no schedule: SimSiam's predictor) on them; the others get :class:`Method`'s defaults.
    Parameters are grouped by those too; the trainer reads ``lr_scale`` and ``fixed_lr`` from each group.
    """
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1
        # per-parameter attributes (a Parameter is no Method): set by Method.set_lr, defaults declared on Method
        scale, fixed = float(getattr(p, "lr_scale", Method.lr_scale)), bool(getattr(p, "fixed_lr", Method.fixed_lr))
        key = (no_decay, scale, fixed)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lars_exclude": no_decay,
                "lr_scale": scale,
                "fixed_lr": fixed,
            }
        groups[key]["params"].append(p)
    return list(groups.values())


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as SimCLR and BYOL use it: SGD with momentum whose step for each weight
    matrix is scaled by the trust ratio η‖w‖ / ‖∇w + λw‖. Groups with ``lars_exclude`` (biases,
    norms) take plain SGD steps."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        """One step for each group, with ``torch._foreach_*`` operations over the group's parameters (a few
        fused kernels per group instead of several per parameter). Per weight w with gradient g:
        d = g + λw; d ← d · η‖w‖/‖d‖ (when both norms are > 0, and not for ``lars_exclude`` groups);
        buf ← momentum · buf + d (buf = d at the first step); w ← w − lr · buf."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            # d = ∇w + λw (a new tensor: the gradients are left as they are)
            d = (
                torch._foreach_add(grads, params, alpha=group["weight_decay"])
                if group["weight_decay"]
                else [g.clone() for g in grads]
            )
            if not group["lars_exclude"]:
                w_norm, d_norm = torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(d))
                trust = torch.where(
                    (w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm, torch.ones_like(w_norm)
                )
                torch._foreach_mul_(d, list(trust.unbind()))
            bufs, new_d = [], []
            for p, dp in zip(params, d):
                state = self.state[p]
                if "momentum_buffer" in state:
                    bufs.append(state["momentum_buffer"])
                    new_d.append(dp)
                else:  # the first step: the buffer starts as d
                    state["momentum_buffer"] = dp
            if bufs:
                torch._foreach_mul_(bufs, group["momentum"])
                torch._foreach_add_(bufs, new_d)
            torch._foreach_add_(params, [self.state[p]["momentum_buffer"] for p in params], alpha=-group["lr"])


def build_optimizer(name: str, model: Method, lr: float, weight_decay: float, momentum: float = 0.9, betas=None):
    """The optimiser of a :class:`Method`. ``betas`` (AdamW): given, else the method's ``adamw_betas`` (a
    method may declare its paper's values, e.g. MAE's (0.9, 0.95); :class:`Method`'s default is PyTorch's)."""
    groups = param_groups(model, weight_decay)
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    if name == "sgd":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, **fused)
    if name == "adamw":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas or model.adamw_betas), **fused)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd, adamw or lars")

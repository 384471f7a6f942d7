"""Per-step schedules, precomputed as arrays indexed by the global step (as DINO does).

    >>> lr = cosine_schedule(0.3, 0.0, total_steps=1000, warmup_steps=100)
    >>> lr[step]
"""
from __future__ import annotations

import math

import torch


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0) -> torch.Tensor:
    """Linear warm-up from ``warmup_start`` to ``base``, then a cosine from ``base`` to ``final``."""
    total_steps = max(int(total_steps), 1)
    warmup_steps = min(int(warmup_steps), total_steps)
    warm = torch.linspace(warmup_start, base, warmup_steps + 1, dtype=torch.float64)[1:] if warmup_steps else torch.empty(0, dtype=torch.float64)
    rest = total_steps - warmup_steps
    t = torch.arange(rest, dtype=torch.float64) / max(rest, 1)
    cos = final + 0.5 * (base - final) * (1 + torch.cos(math.pi * t))
    return torch.cat([warm, cos])


def linear_schedule(start: float, end: float, total_steps: int) -> torch.Tensor:
    return torch.linspace(start, end, max(int(total_steps), 1), dtype=torch.float64)

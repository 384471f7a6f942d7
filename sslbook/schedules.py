"""Every per-step schedule of the package: the learning rate, the momentum of a momentum encoder, DINO's
teacher temperature (and the evaluation protocols' cosine decay).

The learning rate is precomputed as an array indexed by the global step, as DINO's ``cosine_scheduler``
does (Caron et al. 2021, ``utils.py``); the others are read one step at a time by the methods'
``on_step_end`` (which learns the run's length only then) from the same half cosine::

    >>> lr = cosine_schedule(0.3, 0.0, total_steps=1000, warmup_steps=100)
    >>> lr[step]                                  # the trainer, every step
    >>> cosine_momentum(step, total_steps, 0.996)  # BYOL, MoCo v3, DINO: from 0.996 up to 1
"""

from __future__ import annotations

import math

import torch


def cosine_schedule(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> torch.Tensor:
    """Linear warm-up from ``warmup_start`` to ``base``, then a cosine from ``base`` to ``final``: one float64
    value per step (length ``total_steps``)."""
    total_steps = max(int(total_steps), 1)
    warmup_steps = min(int(warmup_steps), total_steps)
    warm = (
        torch.linspace(warmup_start, base, warmup_steps + 1, dtype=torch.float64)[1:]
        if warmup_steps
        else torch.empty(0, dtype=torch.float64)
    )
    rest = total_steps - warmup_steps
    t = torch.arange(rest, dtype=torch.float64) / max(rest, 1)
    cos = final + 0.5 * (base - final) * (1 + torch.cos(math.pi * t))
    return torch.cat([warm, cos])


def cosine_at(step: int, total_steps: int, start: float, end: float) -> float:
    """The half cosine from ``start`` (step 0) to ``end`` (step ``total_steps``) at ``step``, as one float."""
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * step / max(total_steps, 1)))


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """BYOL's / MoCo v3's / DINO's momentum schedule: from ``base`` at step 0 up to 1 at the end (cosine),
    τ_k = 1 − (1 − τ_base)(cos(πk/K) + 1)/2."""
    return cosine_at(step, total_steps, base, 1.0)


def teacher_temperature(step: int, warmup_steps: int, start: float, end: float) -> float:
    """DINO's teacher temperature at ``step``: linear from ``start`` to ``end`` over ``warmup_steps``, then
    ``end`` (the paper: 0.04 → 0.07 over the first 30 epochs)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(end)
    return float(start + (end - start) * step / warmup_steps)

"""The interface between the trainer and a method.

A method is a small ``nn.Module`` that says three things:

1. how to make its training views from a batch of images (:meth:`Method.make_views`),
2. what its networks are (built in ``__init__`` around the given backbone),
3. what its loss is (:meth:`Method.forward` returns a dict with ``"loss"``).

The trainer never names a method; it calls these hooks in this order every step::

    views = method.make_views(images, labels)      # no gradient; on the device or in loader workers
    out = method(views, labels)                    # {"loss": scalar, ...logged values}
    loss.backward(); optimizer.step()
    method.on_step_end(step, total_steps)          # momentum encoders, queues, schedules

After training, the trainer runs the standard evaluation protocols on ``method.backbone`` and adds what
:meth:`Method.evaluate_extra` returns (a method-specific measurement, e.g. mask propagation IoU).

A method that sets ``needs_indices = True`` (a memory bank with one slot per training image) gets
``make_views(images, labels, indices=...)`` with each image's index in the training set.

``views`` is whatever ``make_views`` returns: usually a list of N×3×h×w tensors, one per view, which may
have different sizes (multi-crop). The representation the evaluation protocols measure is
``method.backbone``.
"""
from __future__ import annotations

import torch
from torch import nn

from sslbook.data.base import DataInfo


class Method(nn.Module):
    """Base class: subclasses set ``name`` and implement ``make_views`` and ``forward``."""

    name: str = "method"

    def __init__(self, backbone: nn.Module, info: DataInfo, image_size: int):
        super().__init__()
        self.backbone = backbone
        self.info = info
        self.image_size = image_size

    @torch.no_grad()
    def make_views(self, images: torch.Tensor, labels: torch.Tensor):
        """images: N×3×H×W float in [0, 1]; returns the views ``forward`` consumes."""
        raise NotImplementedError

    def forward(self, views, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> dict[str, float]:
        """Called after each optimiser step; returns values to log (e.g. the current momentum)."""
        return {}

    def evaluate_extra(self) -> dict[str, float]:
        """Method-specific measurements added to the run's metrics after the standard protocols."""
        return {}

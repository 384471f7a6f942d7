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

:class:`Method` declares, with their defaults, the attributes the trainer, :mod:`sslbook.optim` and
:mod:`sslbook.distributed` read: a method changes one by setting it (``needs_indices = True`` for a
memory bank with one slot per training image: ``make_views(images, labels, indices=...)`` then gets each
image's index in the training set; ``adamw_betas`` for its paper's AdamW; ``keep_local_bn`` on a
submodule; ``lr_scale`` / ``fixed_lr`` on some of its parameters, with :meth:`Method.set_lr`; ``uses_labels``
for a method that trains on the labels of a labelled subset, −1 marking the images outside it, and
``labelled_batch_size`` for a labelled batch of its own each step; :meth:`Method.classify` for a method
whose own classifier the trainer should score).

``views`` is whatever ``make_views`` returns: usually a list of N×3×h×w tensors, one per view, which may
have different sizes (multi-crop). The representation the evaluation protocols measure is
``method.backbone``.
"""

from __future__ import annotations

import torch
from torch import nn

from sslbook.data.base import DataInfo


def check_pair(name: str, views, what: str = "views") -> tuple[torch.Tensor, torch.Tensor]:
    """The two views of a two-view method (two N×3×H×W tensors of the same shape), or a clear ValueError
    that names the method (``name``) and what the two are (``what``)."""
    if not isinstance(views, (list, tuple)) or len(views) != 2:
        n = len(views) if hasattr(views, "__len__") else "?"
        raise ValueError(
            f"{name} needs two {what} (a list of two N×3×H×W tensors), got {type(views).__name__} of length {n}"
        )
    a, b = views
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(
            f"{name} needs two {what} of the same shape (N×3×H×W), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a, b


def check_labelled_batch(name: str, size) -> int:
    """A method's ``labelled_batch`` argument as its ``labelled_batch_size``, or a ValueError naming the method."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(
            f"{name}'s labelled_batch must be a whole number >= 0 (0: no labelled batch of its own), got {size!r}"
        )
    return size


class Method(nn.Module):
    """Base class: subclasses set ``name`` and implement ``make_views`` and ``forward``."""

    name: str = "method"

    # Read by the trainer, sslbook.optim and sslbook.distributed (tests/test_method_contracts.py checks that
    # every attribute they read from a method is declared here). The defaults are what a method gets that
    # sets nothing.
    needs_indices: bool = False
    """True: the trainer calls ``make_views(images, labels, indices=...)`` with each image's data-set index."""
    adamw_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's (β1, β2) when the run's optimiser is ``adamw`` (PyTorch's default; MAE declares its paper's)."""
    keep_local_bn: bool = False
    """True on a method or a submodule (MoCo's key encoder): ``sync_bn`` leaves its BatchNorm layers per process."""
    lr_scale: float = 1.0
    """A parameter's multiple of the scheduled learning rate, unless it carries its own (see :meth:`set_lr`)."""
    fixed_lr: bool = False
    """True: a parameter keeps the peak learning rate at every step, unless it carries its own (:meth:`set_lr`)."""
    uses_labels: bool = False
    """True: the method trains on labels (supervised, semi-supervised). With ``TrainConfig.label_fraction`` set,
    the trainer then gives it the labels of the labelled subset only (:func:`sslbook.data.labelled_subset` of
    the fraction and the run's seed) and −1 for every other image; a method that leaves it False gets the
    data set's labels unchanged (and trains on images alone)."""
    labelled_batch_size: int = 0
    """With ``uses_labels`` and a ``label_fraction``: the trainer puts this many images of the labelled subset
    (:class:`sslbook.data.LabelledStream`, a stream of their own) in front of every batch's rows, with their
    labels, as semi-supervised papers draw a labelled batch beside the unlabelled one. 0: labelled images come
    at the data's rate (with 1% of the labels, about one in a batch of 128)."""

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

    @staticmethod
    def set_lr(module: nn.Module, lr_scale: float | None = None, fixed_lr: bool | None = None) -> None:
        """Give every parameter of ``module`` its own ``lr_scale`` and/or ``fixed_lr`` (the attributes that
        :func:`sslbook.optim.param_groups` groups parameters by; the others keep the defaults above)."""
        for p in module.parameters():
            if lr_scale is not None:
                p.lr_scale = float(lr_scale)
            if fixed_lr is not None:
                p.fixed_lr = bool(fixed_lr)

    def classify(self, images: torch.Tensor) -> torch.Tensor | None:
        """The method's own class scores (N×classes) for float images in [0, 1], for a method that trains a
        classifier (supervised, semi-supervised); None for one that does not. The trainer reports the test
        accuracy of these scores as ``classifier_top1``."""
        return None

    def evaluate_extra(self) -> dict[str, float]:
        """Method-specific measurements added to the run's metrics after the standard protocols."""
        return {}

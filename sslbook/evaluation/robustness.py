"""Robustness to corruptions: how much does k-NN accuracy fall on corrupted test images? (Gaussian noise,
blur and contrast at the severities of CIFAR-10-C, Hendrycks & Dietterich 2019)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from sslbook.augment import blur
from sslbook.evaluation.frozen import extract_features, knn_accuracy

CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast")

# Severity 1…5 parameters, those of CIFAR-10-C (Hendrycks & Dietterich 2019):
# noise standard deviation; blur sigma in pixels *for a 32-pixel image* (scaled with the image
# size, so a 224-pixel image gets ImageNet-C-like blurs); contrast factor (1 = unchanged).
SEVERITY_PARAMS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
}


def corrupt(
    x: torch.Tensor,
    kind: str,
    severity: int,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Apply corruption ``kind`` at ``severity`` 1…5 to a float batch in [0, 1] (N×3×H×W, any device).

    - ``gaussian_noise``: add N(0, σ²) per pixel and channel;
    - ``gaussian_blur``: Gaussian blur with σ proportional to the image size;
    - ``contrast``: pull each image's channels towards their mean, ``(x − m)·c + m``.

    Random corruptions draw from ``generator`` (on ``x``'s device) or, if none is given, from a new
    one seeded with ``seed`` (default 0), so the same call gives the same result. The output has
    ``x``'s shape and is clamped to [0, 1].
    """
    if kind not in SEVERITY_PARAMS:
        raise ValueError(f"unknown corruption {kind!r}; choose from {CORRUPTIONS}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1…5, got {severity}")
    c = SEVERITY_PARAMS[kind][severity - 1]
    if kind == "gaussian_noise":
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(0 if seed is None else seed)
        out = x + c * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    elif kind == "gaussian_blur":
        sigma = c * min(x.shape[-2:]) / 32  # kernel radius ⌈3σ⌉
        out = blur(x, sigma, radius=max(1, min(math.ceil(3 * sigma), x.shape[-2] - 1, x.shape[-1] - 1)))
    else:  # contrast
        mean = x.mean(dim=(2, 3), keepdim=True)
        out = (x - mean) * c + mean
    return out.clamp(0.0, 1.0)


def robustness(
    backbone: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    kinds: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 3, 5),
    k: int = 20,
    batch_size: int = 256,
    train_feats: torch.Tensor | None = None,
    train_labels: torch.Tensor | None = None,
    temperature: float = 0.07,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict:
    """k-NN top-1 with clean training features and corrupted test features.

    The training features are extracted once (or passed in as ``train_feats``/``train_labels``);
    the test set is then re-encoded once per (corruption, severity), corruptions seeded by
    ``seed``.

    Returns:
        ``{"clean": acc, "gaussian_noise": {1: acc, 3: acc, 5: acc}, "gaussian_blur": {...}, ...}``
        with accuracies in [0, 1]; :func:`robustness_rows` turns it into table rows.
    """
    if train_feats is None or train_labels is None:
        train_feats, train_labels = extract_features(backbone, train_set, batch_size, device=device, progress=progress)
    keep = train_labels >= 0
    train_feats, train_labels = train_feats[keep], train_labels[keep]

    def knn(transform=None) -> float:
        feats, labels = extract_features(
            backbone, test_set, batch_size, device=device, progress=progress, transform=transform
        )
        return knn_accuracy(train_feats, train_labels, feats, labels, k=k, temperature=temperature)

    result: dict = {"clean": knn()}
    for kind in kinds:
        result[kind] = {severity: knn(_seeded_corruption(kind, severity, seed)) for severity in severities}
    return result


def _seeded_corruption(kind: str, severity: int, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A batch transform applying :func:`corrupt`; its generator is seeded once, on the first
    batch's device, so a whole pass over a data set is reproducible."""
    generator = None

    def transform(x: torch.Tensor) -> torch.Tensor:
        nonlocal generator
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(seed)
        return corrupt(x, kind, severity, generator=generator)

    return transform


def robustness_rows(result: dict) -> list[dict]:
    """Flatten :func:`robustness`'s dict into rows ``{"corruption", "severity", "top1"}``
    (the clean accuracy is the row with corruption ``"clean"`` and severity 0)."""
    rows = [{"corruption": "clean", "severity": 0, "top1": result["clean"]}]
    for kind, by_severity in result.items():
        if kind != "clean":
            rows += [{"corruption": kind, "severity": s, "top1": acc} for s, acc in by_severity.items()]
    return rows

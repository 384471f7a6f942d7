"""Fine-tuning with a fraction of the labels: how good a starting point is the backbone when a few labels
are available? (the 1% / 10% protocols of the semi-supervised literature)."""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from sslbook.augment import horizontal_flip, random_crop, to_float
from sslbook.cost import module_device
from sslbook.data.base import TensorImageDataset
from sslbook.data.subsets import labelled_subset
from sslbook.evaluation.common import _dataset_labels, _info_num_classes, _iterate
from sslbook.schedules import cosine_at

# the labelled subset of fine-tuning is the one every semi-supervised run of the same fraction and seed trains on
stratified_subset = labelled_subset


def flip_and_crop(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """The standard light augmentation, per sample: random horizontal flip, then a random crop of
    the original size from the image reflect-padded by ``padding`` pixels. x: N×C×H×W → N×C×H×W.
    """
    x = horizontal_flip(x, 0.5, generator=generator)
    p = min(padding, x.shape[-2] - 1, x.shape[-1] - 1)  # reflect padding needs pad < size
    return random_crop(x, p, generator=generator) if p > 0 else x


def _freeze(backbone: nn.Module, prefixes: Sequence[str]) -> list[nn.Module]:
    """Stop gradients to the parameters under any name in ``prefixes``; return the frozen modules
    (they are kept in eval mode during training so their batch-norm statistics do not move)."""

    def matches(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    module_names = [n for n, _ in backbone.named_modules()]
    unknown = [p for p in prefixes if p not in module_names]
    if unknown:
        top = [n for n, _ in backbone.named_children()]
        raise ValueError(f"no submodule named {unknown} to freeze; top-level modules are {top}")
    for name, param in backbone.named_parameters():
        if matches(name):
            param.requires_grad_(False)
    return [m for n, m in backbone.named_modules() if n in prefixes]


def finetune(
    backbone: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    label_fraction: float = 0.1,
    epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    freeze: Sequence[str] | None = None,
    weight_decay: float = 5e-4,
    num_workers: int = 0,
) -> dict:
    """Semi-supervised evaluation: fine-tune a copy of ``backbone`` plus a linear head on a
    class-balanced ``label_fraction`` of ``train_set``, and report top-1 on ``test_set``.

    - The caller's backbone is never modified: a deep copy is trained.
    - The labelled subset is :func:`stratified_subset` of the training labels with ``seed``.
    - Every parameter is trained, except those of the backbone's submodules whose names start
      with an entry of ``freeze`` (e.g. ``freeze=["conv1", "conv2"]``); frozen modules also keep
      their batch-norm statistics (they stay in eval mode).
    - Light augmentation on the device (:func:`flip_and_crop`), SGD with Nesterov momentum 0.9,
      weight decay and a cosine learning-rate schedule.
    - ``num_classes`` is ``train_set.info.num_classes`` if present, else inferred from the labels.

    Returns:
        dict with ``top1`` (test accuracy in [0, 1]), ``backbone`` (the trained copy, eval mode),
        ``head`` (``nn.Linear(out_dim, num_classes)``), ``train_index`` (the labelled subset) and
        ``history`` (mean training loss of each epoch).
    """
    device = torch.device(device) if device is not None else module_device(backbone)
    train_labels = _dataset_labels(train_set)
    index = stratified_subset(train_labels, label_fraction, seed=seed)
    num_classes = _info_num_classes(train_set)
    if num_classes is None:
        num_classes = int(max(train_labels.max(), _dataset_labels(test_set).max())) + 1
    if isinstance(train_set, TensorImageDataset):
        labelled = train_set.subset(index)
    else:
        labelled = Subset(train_set, index.tolist())

    model = copy.deepcopy(backbone).to(device)
    frozen = _freeze(model, list(freeze)) if freeze else []
    generator = torch.Generator().manual_seed(seed)  # head initialisation and shuffling (CPU)
    head = nn.Linear(model.out_dim, num_classes)
    nn.init.normal_(head.weight, std=0.01, generator=generator)
    nn.init.zeros_(head.bias)
    head.to(device)
    aug_generator = torch.Generator(device=device).manual_seed(seed)

    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    total_steps = max(1, epochs * math.ceil(len(labelled) / batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_at(min(step, total_steps), total_steps, 1.0, 0.0)
    )

    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc=f"fine-tune ({len(labelled)} labels)")
    history = []
    for _ in epoch_iter:
        model.train()
        head.train()
        for m in frozen:
            m.eval()
        total, seen = 0.0, 0
        for images, y in _iterate(labelled, batch_size, shuffle=True, generator=generator, num_workers=num_workers):
            if len(y) < 2:  # batch-norm cannot train on a single image
                continue
            x = flip_and_crop(to_float(images.to(device, non_blocking=True)), generator=aug_generator)
            y = y.to(device)
            loss = F.cross_entropy(head(model(x)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(y)
            seen += len(y)
        history.append(total / max(seen, 1))
        if progress:
            epoch_iter.set_postfix(loss=f"{history[-1]:.3f}")

    model.eval()
    head.eval()
    correct, count = 0, 0
    with torch.no_grad():
        for images, y in _iterate(test_set, 256, num_workers=num_workers):
            pred = head(model(to_float(images.to(device)))).argmax(1).cpu()
            keep = y >= 0
            correct += int((pred[keep] == y[keep]).sum())
            count += int(keep.sum())
    return {
        "top1": correct / max(count, 1),
        "backbone": model,
        "head": head,
        "train_index": index,
        "history": history,
    }

"""Evaluation protocols: how good is a representation?

A self-supervised method produces a **backbone**: an ``nn.Module`` that takes float images in
[0, 1] of shape N×3×H×W (it normalises them itself) and returns features N×D, with ``D =
backbone.out_dim``. Everything in this module takes such a backbone and knows nothing about the
method that trained it, so every chapter measures its method with the same rulers:

==================  ===========================================================================
protocol            what it measures
==================  ===========================================================================
k-NN                are images of one class close together? No training, no hyper-parameters
                    to tune beyond k and a temperature (Wu et al. 2018; Caron et al. 2021).
linear probe        is the class linearly decodable from frozen features? (softmax regression)
k-means NMI / ARI   do the features cluster by class without any label? (Caron et al. 2018)
t-SNE               a picture of the feature space (van der Maaten & Hinton 2008).
fine-tuning         how good a starting point is the backbone when a few labels are available?
robustness          how much does k-NN accuracy fall on corrupted test images?
                    (Gaussian noise, blur, contrast; after Hendrycks & Dietterich 2019)
throughput          images per second and peak memory of a module.
==================  ===========================================================================

Conventions used throughout:

- data sets yield ``(image, label)`` with ``image`` a uint8 tensor 3×H×W and ``label`` an int;
  images become floats in [0, 1] (:func:`to_float`) only on the device;
- features are float32 N×D tensors on the CPU, labels int64 N tensors;
- **every accuracy is a fraction in [0, 1]**, never a percentage.
"""
from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from sslbook.augment import blur, horizontal_flip, random_crop, to_float
from sslbook.data.base import TensorImageDataset
from sslbook.schedules import cosine_at

__all__ = [
    "CORRUPTIONS",
    "SEVERITY_PARAMS",
    "corrupt",
    "count_parameters",
    "evaluate",
    "extract_features",
    "finetune",
    "flip_and_crop",
    "kmeans_scores",
    "knn_accuracy",
    "knn_classify",
    "linear_probe",
    "measure_throughput",
    "pareto_front",
    "rank_correlation",
    "plot_tsne",
    "robustness",
    "robustness_rows",
    "stratified_subset",
    "to_float",
    "tsne_embedding",
]


# ----------------------------------------------------------------------------------------------
# Small helpers: bytes to floats, batches out of any data set, devices, labels
# ----------------------------------------------------------------------------------------------


def _module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for a module with neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _iterate(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images uint8 B×3×H×W, labels int64 B)`` batches of any data set.

    A :class:`TensorImageDataset` is sliced directly (no per-item Python calls); anything else
    goes through a :class:`~torch.utils.data.DataLoader` with the default collate function.
    """
    if isinstance(dataset, TensorImageDataset):
        n = len(dataset)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, batch_size):
            if order is None:
                yield dataset.images[start : start + batch_size], dataset.labels[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                yield dataset.images[idx], dataset.labels[idx]
        return
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
    for images, labels in loader:
        yield images, torch.as_tensor(labels).long()


def _dataset_labels(dataset: Dataset) -> torch.Tensor:
    """All labels of a data set as int64 N, reading images only when there is no other way."""
    if isinstance(dataset, Subset):
        return _dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    for attr in ("labels", "targets"):  # ours, and torchvision's convention
        labels = getattr(dataset, attr, None)
        if labels is not None and len(labels) == len(dataset):
            return torch.as_tensor(labels).long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def _info_num_classes(dataset: Dataset) -> int | None:
    """``dataset.info.num_classes`` if the data set (or the one under a Subset) has it."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    info = getattr(dataset, "info", None)
    n = getattr(info, "num_classes", None)
    return int(n) if n else None


def _check_labels(labels: torch.Tensor, what: str) -> None:
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{what} contain negative (unlabelled) entries; drop them first")


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    progress: bool = False,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` over ``dataset`` once, in order, and collect its outputs.

    Args:
        backbone: images N×3×H×W float in [0, 1] → features N×D.
        dataset: yields ``(uint8 image 3×H×W, int label)``.
        device: where to run; default the device of the backbone's parameters (the backbone is
            moved there if it is not already).
        transform: optional function applied to each float batch B×3×H×W *on the device*, before
            the backbone (used for corrupted test sets, see :func:`robustness`).

    Returns:
        ``(features float32 N×D on the CPU, labels int64 N)``, in data set order.

    The backbone runs in eval mode (batch-norm uses its running statistics, dropout is off); every
    submodule's train/eval flag is restored afterwards, so calling this in the middle of training
    is safe.
    """
    device = torch.device(device) if device is not None else _module_device(backbone)
    backbone.to(device)
    modes = [(m, m.training) for m in backbone.modules()]
    backbone.eval()
    batches = _iterate(dataset, batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=math.ceil(len(dataset) / batch_size), desc="features", leave=False)
    feats, labels = [], []
    try:
        for images, y in batches:
            x = to_float(images.to(device, non_blocking=True))
            if transform is not None:
                x = transform(x)
            feats.append(backbone(x).float().cpu())
            labels.append(y.long().cpu())
    finally:
        for m, training in modes:
            m.training = training
    if not feats:
        out_dim = getattr(backbone, "out_dim", 0)
        return torch.zeros(0, out_dim), torch.zeros(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)


# ----------------------------------------------------------------------------------------------
# k-nearest-neighbour classifier
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def knn_classify(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Weighted k-NN on the unit sphere (Wu et al. 2018, as used by DINO).

    Both feature sets are L2-normalised, so the dot product is the cosine similarity ``s``. Each
    test point finds its ``k`` most similar training points, and each neighbour votes for its
    label with weight ``exp(s / temperature)``: close neighbours count much more than far ones.

    Args:
        train_feats: N×D; train_labels: int64 N in 0…C−1; test_feats: M×D.
        num_classes: C; default ``train_labels.max() + 1``.
        chunk: test points handled at a time (memory is ``chunk × N`` floats).

    Returns:
        predicted labels, int64 M (on the device of ``test_feats``).

    Subtracting each row's largest similarity before the exponential leaves the vote unchanged
    (all weights of a row are scaled by the same factor) and avoids overflow at small temperatures.
    """
    train_labels = train_labels.long().to(train_feats.device)
    _check_labels(train_labels, "train_labels")
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1 if train_labels.numel() else 1
    k = min(k, len(train_feats))
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1).to(train.device)
    preds = []
    for start in range(0, len(test), chunk):
        sim = test[start : start + chunk] @ train.T  # B×N cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)  # B×k, sorted, most similar first
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
        votes = torch.zeros(len(top_sim), num_classes, device=train.device)
        votes.scatter_add_(1, train_labels[top_idx], weights)  # B×C summed weights per class
        preds.append(votes.argmax(dim=1))
    if not preds:
        return torch.zeros(0, dtype=torch.long, device=test_feats.device)
    return torch.cat(preds).to(test_feats.device)


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of :func:`knn_classify` on ``test_labels``."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_classify(train_feats, train_labels, test_feats, k=k, temperature=temperature, num_classes=num_classes)
    return (pred.cpu() == test_labels.long().cpu()).float().mean().item()


# ----------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------


def linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict:
    """Softmax regression on frozen, precomputed features.

    The features are standardised with the training set's per-dimension mean and std, then a
    single ``nn.Linear(D, C)`` (initialised at zero: the problem is convex, any start works) is
    trained with cross-entropy, AdamW and a cosine learning-rate schedule over
    ``epochs × ceil(N / batch_size)`` steps. Mini-batches are drawn from a generator seeded with
    ``seed``, so the result is deterministic. On a CPU, 10 000 × 512 features for 100 epochs take
    a few seconds.

    Args:
        train_feats: N×D; train_labels: int64 N; test_feats: M×D; test_labels: int64 M.
        device: where to train; default the device of ``train_feats``.

    Returns:
        dict with ``top1`` (test accuracy in [0, 1]), ``train_top1``, ``classifier`` (the trained
        ``nn.Linear``, on the CPU), ``mean`` and ``std`` (1×D; predict on new features ``f`` with
        ``classifier((f - mean) / std)``) and ``history`` (mean training loss of each epoch).
    """
    train_labels, test_labels = train_labels.long(), test_labels.long()
    _check_labels(train_labels, "train_labels")
    device = torch.device(device) if device is not None else train_feats.device
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    mean = train_feats.float().mean(0, keepdim=True)
    std = train_feats.float().std(0, keepdim=True).clamp_min(1e-6)
    x_train = ((train_feats.float() - mean) / std).to(device)
    x_test = ((test_feats.float() - mean) / std).to(device)
    y_train = train_labels.to(device)

    classifier = nn.Linear(x_train.shape[1], num_classes).to(device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    try:  # the fused implementation is one kernel per step instead of a dozen: faster on CPU and GPU
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = max(1, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)

    history, step = [], 0
    with _single_thread_on_cpu(device):
        for _ in range(epochs):
            history.append(_linear_epoch(classifier, optimizer, x_train, y_train, generator, batch_size, lr, step, total_steps))
            step += steps_per_epoch

    with torch.no_grad():
        train_top1 = (classifier(x_train).argmax(1) == y_train).float().mean().item()
        test_top1 = (classifier(x_test).argmax(1).cpu() == test_labels.cpu()).float().mean().item()
    return {
        "top1": test_top1,
        "train_top1": train_top1,
        "classifier": classifier.cpu().eval(),
        "mean": mean.cpu(),
        "std": std.cpu(),
        "history": history,
    }


@contextlib.contextmanager
def _single_thread_on_cpu(device: torch.device):
    """Small matrix products (a batch of 256 × D times D × C) run fastest on one CPU thread: the thread
    pool's start-up costs more than the work. Restores the thread count afterwards."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _linear_epoch(classifier, optimizer, x_train, y_train, generator, batch_size, lr, step, total_steps) -> float:
    """One epoch of the linear probe; returns its mean training loss."""
    device, n = x_train.device, len(x_train)
    order = torch.randperm(n, generator=generator).to(device)
    epoch_loss = torch.zeros((), device=device)
    for start in range(0, n, batch_size):
        for group in optimizer.param_groups:  # cosine decay from lr to 0
            group["lr"] = cosine_at(step, total_steps, lr, 0.0)
        idx = order[start : start + batch_size]
        loss = F.cross_entropy(classifier(x_train[idx]), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        epoch_loss += loss.detach() * len(idx)
        step += 1
    return epoch_loss.item() / n


# ----------------------------------------------------------------------------------------------
# Clustering and pictures
# ----------------------------------------------------------------------------------------------


def kmeans_scores(
    feats: torch.Tensor,
    labels: torch.Tensor,
    n_clusters: int | None = None,
    seed: int = 0,
    n_init: int = 10,
) -> dict:
    """Cluster L2-normalised features with k-means and compare the clusters with the classes.

    Args:
        feats: N×D; labels: int N (used only for scoring, never for clustering).
        n_clusters: default the number of distinct labels.
        n_init: k-means restarts (fixed, so results do not depend on the scikit-learn version).

    Returns:
        dict with ``nmi`` (normalised mutual information) and ``ari`` (adjusted Rand index), both
        ≈ 0 for clusters unrelated to the classes and 1 for a perfect match, and ``assignments``
        (numpy int N, the cluster of each point).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    x = F.normalize(feats.float(), dim=1).cpu().numpy()
    y = torch.as_tensor(labels).cpu().numpy()
    if n_clusters is None:
        n_clusters = len(set(y.tolist()))
    assignments = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(x)
    return {
        "nmi": float(normalized_mutual_info_score(y, assignments)),
        "ari": float(adjusted_rand_score(y, assignments)),
        "assignments": assignments,
    }


def tsne_embedding(feats: torch.Tensor, seed: int = 0, max_points: int = 2000):
    """2-D t-SNE of L2-normalised features (PCA initialisation, for a stable global layout).

    At most ``max_points`` points are embedded (t-SNE is slow); the subset is drawn uniformly
    with a generator seeded by ``seed`` and kept in data set order.

    Returns:
        ``(embedding numpy float32 N'×2, index numpy int64 N')`` where ``index`` says which rows
        of ``feats`` were embedded (use it to pick their labels: ``labels[index]``).
    """
    from sklearn.manifold import TSNE

    n = len(feats)
    if n > max_points:
        index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values
    else:
        index = torch.arange(n)
    x = F.normalize(feats[index].float(), dim=1).cpu().numpy()
    perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3)))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, learning_rate="auto", random_state=seed)
    return tsne.fit_transform(x).astype("float32"), index.numpy()


def plot_tsne(
    feats: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str] | None = None,
    ax=None,
    title: str | None = None,
    seed: int = 0,
    max_points: int = 2000,
):
    """Scatter plot of :func:`tsne_embedding`, one colour per class, with a legend; returns ``ax``."""
    import matplotlib.pyplot as plt

    emb, index = tsne_embedding(feats, seed=seed, max_points=max_points)
    y = torch.as_tensor(labels)[torch.as_tensor(index)].cpu().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    classes = sorted(set(y.tolist()))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        mask = y == c
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        ax.scatter(emb[mask, 0], emb[mask, 1], s=4, color=cmap(i % cmap.N), label=name, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else f"t-SNE of {len(emb)} features")
    if len(classes) <= 20:
        ax.legend(markerscale=3, fontsize="small", loc="best", frameon=False)
    return ax


# ----------------------------------------------------------------------------------------------
# Fine-tuning with a fraction of the labels
# ----------------------------------------------------------------------------------------------


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of a class-balanced ``fraction`` of a labelled set, deterministic given ``seed``.

    Each class ``c`` with ``n_c`` examples contributes ``max(1, round(fraction · n_c))`` of them,
    chosen uniformly at random; unlabelled entries (label < 0) are never chosen. Returns the
    indices sorted, int64.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = torch.as_tensor(labels).long()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        members = torch.nonzero(labels == c).flatten()
        n_c = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:n_c]])
    if not chosen:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(chosen).sort().values


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
    device = torch.device(device) if device is not None else _module_device(backbone)
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


# ----------------------------------------------------------------------------------------------
# Robustness to corruptions
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Cost: parameters, throughput, memory
# ----------------------------------------------------------------------------------------------


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of the values of ``x``; tied values share the mean of the ranks they occupy."""
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=x.dtype)
    for v in torch.unique(x):
        tied = x == v
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: the Pearson correlation of the two lists' ranks (ties get their
    average rank). 1 when ``y`` orders the items exactly as ``x`` does, −1 when exactly reversed.
    Used to ask whether a small-scale comparison ranks methods as the published full-scale one does."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need two 1-D lists of the same length ≥ 2, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.norm() * ry.norm()).item()
    if denom == 0:
        raise ValueError("a list whose values are all equal has no ranking to correlate")
    return float((rx @ ry).item() / denom)


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points that no other point beats on both axes: an item is on the front unless
    another costs no more *and* scores no less, and is strictly better on one of the two. Sorted by cost.
    The compute-efficiency question "what is the best accuracy for this much training?" is answered by it."""
    c, s = torch.as_tensor(costs, dtype=torch.float64), torch.as_tensor(scores, dtype=torch.float64)
    if c.shape != s.shape or c.ndim != 1:
        raise ValueError(f"costs and scores must be 1-D of the same length, got {tuple(c.shape)} and {tuple(s.shape)}")
    front = []
    for i in range(len(c)):
        dominated = (c <= c[i]) & (s >= s[i]) & ((c < c[i]) | (s > s[i]))
        if not bool(dominated.any()):
            front.append(i)
    return sorted(front, key=lambda i: (float(c[i]), -float(s[i])))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _peak_rss_mb() -> float | None:
    """The process's peak resident set size so far, in MiB (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _as_scalar(out) -> torch.Tensor:
    """Reduce a module's output (a tensor, or a tuple/list/dict of them) to one scalar for backward."""
    if isinstance(out, torch.Tensor):
        return out.float().mean()
    if isinstance(out, dict):
        out = list(out.values())
    return sum(_as_scalar(o) for o in out if isinstance(o, (torch.Tensor, list, tuple, dict)))


def measure_throughput(
    module: nn.Module,
    image_size: int | tuple[int, int],
    batch_size: int = 64,
    steps: int = 10,
    warmup: int = 2,
    device: torch.device | str | None = None,
    train: bool = False,
) -> dict:
    """Time ``module`` on random float images batch_size×3×H×W in [0, 1].

    ``train=False``: forward passes under ``torch.no_grad`` in eval mode. ``train=True``: forward
    and backward (of the output's mean) in train mode; no optimiser step, and the module's
    gradients, buffers (batch-norm statistics) and train/eval flags are restored afterwards.
    ``warmup`` untimed steps come first (kernel selection, allocator warm-up).

    Returns:
        dict with ``images_per_s``, ``ms_per_batch``, ``peak_mem_mb``, ``device`` (str),
        ``batch_size``, ``image_size`` and ``train``. On CUDA ``peak_mem_mb`` is
        ``torch.cuda.max_memory_allocated`` during the measurement (weights included); on the CPU it
        is the growth of the process's *maximum* resident set size (``resource.getrusage``), an
        approximation that reads 0 when the process had already used more memory earlier.
    """
    device = torch.device(device) if device is not None else _module_device(module)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    module.to(device)
    modes = [(m, m.training) for m in module.modules()]
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    grads = {name: p.grad for name, p in module.named_parameters()}
    module.train(train)
    x = torch.rand(batch_size, 3, h, w, device=device, generator=torch.Generator(device=device).manual_seed(0))
    cuda = device.type == "cuda"

    def step():
        if train:
            module.zero_grad(set_to_none=True)
            _as_scalar(module(x)).backward()
        else:
            with torch.no_grad():
                module(x)

    try:
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        rss_before = _peak_rss_mb()
        for _ in range(warmup):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        if cuda:
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            rss_after = _peak_rss_mb()
            peak = None if rss_before is None else rss_after - rss_before
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for name, b in module.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
        for name, p in module.named_parameters():
            p.grad = grads.get(name)
    elapsed = max(elapsed, 1e-9)
    return {
        "images_per_s": batch_size * steps / elapsed,
        "ms_per_batch": 1000 * elapsed / max(steps, 1),
        "peak_mem_mb": peak,
        "device": str(device),
        "batch_size": batch_size,
        "image_size": (h, w),
        "train": train,
    }


# ----------------------------------------------------------------------------------------------
# Everything at once
# ----------------------------------------------------------------------------------------------

PROTOCOLS = ("knn", "linear", "kmeans")


def evaluate(
    backbone: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    protocols: Sequence[str] = ("knn", "linear"),
    k: int = 20,
    temperature: float = 0.07,
    linear_epochs: int = 100,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = False,
    seed: int = 0,
) -> dict:
    """Extract features once and run the chosen frozen-feature protocols.

    Args:
        protocols: any of ``"knn"`` (weighted k-NN, train → test), ``"linear"`` (linear probe
            trained on train features, scored on test) and ``"kmeans"`` (clusters of the *test*
            features against the test labels). Unlabelled training images (label < 0) are ignored.

    Returns:
        a dict of plain Python floats, all fractions in [0, 1]: ``knn_top1``, ``linear_top1``,
        ``nmi`` and ``ari`` for the protocols asked for.
    """
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; choose from {PROTOCOLS}")
    out: dict = {}
    test_feats, test_labels = extract_features(backbone, test_set, batch_size, device=device, progress=progress)
    if "knn" in protocols or "linear" in protocols:
        train_feats, train_labels = extract_features(backbone, train_set, batch_size, device=device, progress=progress)
        keep = train_labels >= 0
        train_feats, train_labels = train_feats[keep], train_labels[keep]
        if "knn" in protocols:
            out["knn_top1"] = float(knn_accuracy(train_feats, train_labels, test_feats, test_labels, k, temperature))
        if "linear" in protocols:
            probe = linear_probe(train_feats, train_labels, test_feats, test_labels, epochs=linear_epochs, seed=seed)
            out["linear_top1"] = float(probe["top1"])
    if "kmeans" in protocols:
        scores = kmeans_scores(test_feats, test_labels, seed=seed)
        out["nmi"], out["ari"] = float(scores["nmi"]), float(scores["ari"])
    return out

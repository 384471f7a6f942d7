"""Frozen-feature protocols: features of a backbone, k-NN, the linear probe, k-means NMI / ARI, t-SNE, and
:func:`evaluate`, which runs the chosen ones on one extraction of the features."""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from sslbook.augment import to_float
from sslbook.cost import module_device
from sslbook.evaluation.common import _check_labels, _iterate
from sslbook.evaluation.stats import bootstrap as bootstrap_scores
from sslbook.schedules import cosine_at

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
    device = torch.device(device) if device is not None else module_device(backbone)
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
    return knn_correct(train_feats, train_labels, test_feats, test_labels, k, temperature).float().mean().item()


def knn_correct(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Which test items (bool M, on the CPU) :func:`knn_classify` gets right."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_classify(train_feats, train_labels, test_feats, k=k, temperature=temperature, num_classes=num_classes)
    return pred.cpu() == test_labels.long().cpu()


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
        dict with ``top1`` (test accuracy in [0, 1]), ``test_correct`` (bool M: which test items the probe
        classifies right), ``train_top1``, ``classifier`` (the trained
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
            history.append(
                _linear_epoch(classifier, optimizer, x_train, y_train, generator, batch_size, lr, step, total_steps)
            )
            step += steps_per_epoch

    with torch.no_grad():
        train_top1 = (classifier(x_train).argmax(1) == y_train).float().mean().item()
        test_correct = classifier(x_test).argmax(1).cpu() == test_labels.cpu()
    return {
        "top1": test_correct.float().mean().item(),
        "test_correct": test_correct,
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
    bootstrap: int = 0,
) -> dict:
    """Extract features once and run the chosen frozen-feature protocols.

    Args:
        protocols: any of ``"knn"`` (weighted k-NN, train → test), ``"linear"`` (linear probe
            trained on train features, scored on test) and ``"kmeans"`` (clusters of the *test*
            features against the test labels). Unlabelled training images (label < 0) are ignored.
        bootstrap: if > 0, also the test set's sampling noise on the k-NN and linear top-1: that many
            resamples of the test items with replacement (:func:`~sslbook.evaluation.stats.bootstrap`,
            seeded with ``seed``).

    Returns:
        a dict of plain Python floats, all fractions in [0, 1]: ``knn_top1``, ``linear_top1``,
        ``nmi`` and ``ari`` for the protocols asked for; with ``bootstrap``, for each top-1 also
        ``<name>_boot_std`` (the standard deviation over the resamples) and ``<name>_low``,
        ``<name>_high`` (the 95% percentile interval).
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
        correct = {}
        if "knn" in protocols:
            correct["knn_top1"] = knn_correct(train_feats, train_labels, test_feats, test_labels, k, temperature)
            out["knn_top1"] = float(correct["knn_top1"].float().mean())
        if "linear" in protocols:
            probe = linear_probe(train_feats, train_labels, test_feats, test_labels, epochs=linear_epochs, seed=seed)
            correct["linear_top1"] = probe["test_correct"]
            out["linear_top1"] = float(probe["top1"])
        if bootstrap:
            for name, c in correct.items():
                b = bootstrap_scores(c, resamples=bootstrap, seed=seed)
                out.update({f"{name}_boot_std": b["std"], f"{name}_low": b["low"], f"{name}_high": b["high"]})
    if "kmeans" in protocols:
        scores = kmeans_scores(test_feats, test_labels, seed=seed)
        out["nmi"], out["ari"] = float(scores["nmi"]), float(scores["ari"])
    return out

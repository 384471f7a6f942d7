"""Tests of the evaluation protocols on toy problems whose right answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from sslbook import evaluation as ev
from sslbook.data.base import DataInfo, TensorImageDataset

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# Toy data and a tiny backbone
# ----------------------------------------------------------------------------------------------


def clusters(n_per_class=50, num_classes=4, dim=16, spread=0.05, seed=0):
    """Well-separated Gaussian clusters: features N×dim, labels N."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g) * 3
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centers[labels] + spread * torch.randn(len(labels), dim, generator=g)
    perm = torch.randperm(len(labels), generator=g)
    return feats[perm], labels[perm]


COLOURS = torch.tensor([[220, 40, 40], [40, 200, 40], [40, 40, 220], [200, 200, 40]], dtype=torch.float32)


def colour_images(n=200, size=16, seed=0) -> TensorImageDataset:
    """Images whose mean colour encodes the class (4 classes, balanced), plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    noise = (torch.rand(n, 3, size, size, generator=g) - 0.5) * 80
    images = (COLOURS[labels].view(n, 3, 1, 1) + noise).clamp(0, 255).to(torch.uint8)
    info = DataInfo(name="colours", classes=["red", "green", "blue", "yellow"], image_size=size)
    return TensorImageDataset(images, labels, info)


class PlainDataset(Dataset):
    """The same samples as a TensorImageDataset, without ``.images``/``.labels``/``.info``."""

    def __init__(self, base: TensorImageDataset):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


class TinyBackbone(nn.Module):
    """conv → BN → ReLU → global average pool → flatten; float [0, 1] in, N×8 out."""

    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = width
        self.modes_seen = []

    def forward(self, x):
        self.modes_seen.append(self.training)
        return self.pool(torch.relu(self.bn(self.conv((x - 0.5) / 0.25))))


@pytest.fixture(scope="module")
def toy_sets():
    return colour_images(200, seed=0), colour_images(100, seed=1)


# ----------------------------------------------------------------------------------------------
# k-NN
# ----------------------------------------------------------------------------------------------


def test_knn_separable_is_perfect_and_random_labels_are_chance():
    train_x, train_y = clusters(seed=0)
    test_x, test_y = clusters(seed=0, n_per_class=25)
    assert ev.knn_accuracy(train_x, train_y, test_x, test_y, k=5) == 1.0

    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 32, generator=g)
    y = torch.randint(0, 4, (1000,), generator=g)
    acc = ev.knn_accuracy(x[:800], y[:800], x[800:], y[800:], k=20)
    assert 0.1 < acc < 0.4  # chance is 0.25


def test_knn_weighted_vote_differs_from_majority():
    # One class-0 neighbour right next to the query, two class-1 neighbours further away.
    train = torch.tensor([[1.0, 0.05], [1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[1.0, 0.0]])
    # k = 3: the neighbours are points 0, 1, 2; an unweighted majority would say class 1.
    sharp = ev.knn_classify(train, labels, query, k=3, temperature=0.07)
    flat = ev.knn_classify(train, labels, query, k=3, temperature=1e3)  # ≈ equal weights
    assert sharp.tolist() == [0]
    assert flat.tolist() == [1]
    # k larger than the training set is clamped, and num_classes may exceed the labels seen.
    assert ev.knn_classify(train, labels, query, k=50, temperature=0.07, num_classes=7).tolist() == [0]


def test_knn_chunks_agree_and_reject_unlabelled():
    x, y = clusters(seed=2)
    q = torch.randn(37, x.shape[1])
    assert torch.equal(ev.knn_classify(x, y, q, chunk=5), ev.knn_classify(x, y, q, chunk=1024))
    with pytest.raises(ValueError):
        ev.knn_classify(x, torch.full_like(y, -1), q)


# ----------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------


def test_linear_probe_separable_random_and_deterministic():
    train_x, train_y = clusters(n_per_class=100, seed=0)
    test_x, test_y = clusters(n_per_class=25, seed=0)
    res = ev.linear_probe(train_x, train_y, test_x, test_y, epochs=20)
    assert res["top1"] >= 0.99
    assert isinstance(res["classifier"], nn.Linear) and res["classifier"].out_features == 4
    assert len(res["history"]) == 20 and res["history"][-1] < res["history"][0]
    assert res["mean"].shape == (1, 16) and res["std"].shape == (1, 16)
    # The stored mean/std reproduce the test accuracy.
    pred = res["classifier"]((test_x - res["mean"]) / res["std"]).argmax(1)
    assert (pred == test_y).float().mean().item() == pytest.approx(res["top1"])

    again = ev.linear_probe(train_x, train_y, test_x, test_y, epochs=20)
    assert torch.equal(again["classifier"].weight, res["classifier"].weight)

    g = torch.Generator().manual_seed(3)
    x = torch.randn(1000, 32, generator=g)
    y = torch.randint(0, 4, (1000,), generator=g)
    rand = ev.linear_probe(x[:800], y[:800], x[800:], y[800:], epochs=20)
    assert rand["top1"] < 0.4  # chance is 0.25; there is nothing to learn


# ----------------------------------------------------------------------------------------------
# Clustering and t-SNE
# ----------------------------------------------------------------------------------------------


def test_kmeans_scores():
    x, y = clusters(seed=4)
    good = ev.kmeans_scores(x, y)
    assert good["nmi"] > 0.99 and good["ari"] > 0.99
    g = torch.Generator().manual_seed(5)
    bad = ev.kmeans_scores(torch.randn(400, 16, generator=g), torch.randint(0, 4, (400,), generator=g))
    assert abs(bad["nmi"]) < 0.1 and abs(bad["ari"]) < 0.1


def test_tsne_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    x, y = clusters(n_per_class=20, seed=6)
    emb, index = ev.tsne_embedding(x, max_points=50)
    assert emb.shape == (50, 2) and len(index) == 50 and sorted(index.tolist()) == index.tolist()
    emb2, index2 = ev.tsne_embedding(x, max_points=50)
    assert (index == index2).all()
    ax = ev.plot_tsne(x, y, class_names=["a", "b", "c", "d"], title="toy", max_points=50)
    assert ax.get_title() == "toy"
    assert list(ax.get_xticks()) == [] and ax.get_legend() is not None
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["a", "b", "c", "d"]


# ----------------------------------------------------------------------------------------------
# Feature extraction
# ----------------------------------------------------------------------------------------------


def test_extract_features(toy_sets):
    train_set, _ = toy_sets
    backbone = TinyBackbone()
    backbone.train()
    feats, labels = ev.extract_features(backbone, train_set, batch_size=64)
    assert feats.shape == (200, 8) and feats.dtype == torch.float32 and not feats.requires_grad
    assert torch.equal(labels, train_set.labels)
    assert backbone.training and backbone.bn.training  # restored
    assert set(backbone.modes_seen) == {False}  # ran in eval mode

    # A plain Dataset goes through a DataLoader and gives the same features.
    feats2, labels2 = ev.extract_features(backbone, PlainDataset(train_set), batch_size=50)
    assert torch.allclose(feats, feats2, atol=1e-5) and torch.equal(labels, labels2)

    # The transform is applied to the float batch.
    seen = []
    ev.extract_features(backbone, train_set, batch_size=128, transform=lambda x: seen.append(x.dtype) or x)
    assert seen == [torch.float32, torch.float32]

    backbone.eval()
    ev.extract_features(backbone, train_set)
    assert not backbone.training


# ----------------------------------------------------------------------------------------------
# Fine-tuning
# ----------------------------------------------------------------------------------------------


def test_stratified_subset_counts():
    labels = torch.tensor([0] * 40 + [1] * 20 + [2] * 10 + [-1] * 30)
    idx = ev.stratified_subset(labels, 0.5, seed=0)
    assert torch.bincount(labels[idx], minlength=3).tolist() == [20, 10, 5]
    assert torch.equal(idx, ev.stratified_subset(labels, 0.5, seed=0))
    assert not torch.equal(idx, ev.stratified_subset(labels, 0.5, seed=1))
    assert len(ev.stratified_subset(labels, 0.01)) == 3  # at least one per class
    with pytest.raises(ValueError):
        ev.stratified_subset(labels, 0.0)


def test_flip_and_crop():
    x = torch.rand(8, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    y = ev.flip_and_crop(x, padding=0, generator=g)
    for a, b in zip(x, y):
        assert torch.equal(b, a) or torch.equal(b, a.flip(2))
    z = ev.flip_and_crop(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert z.shape == x.shape and not torch.equal(z, x)
    assert torch.equal(z, ev.flip_and_crop(x, padding=2, generator=torch.Generator().manual_seed(0)))


def test_finetune_beats_chance_and_leaves_backbone_alone(toy_sets):
    train_set, test_set = toy_sets
    torch.manual_seed(0)
    backbone = TinyBackbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    res = ev.finetune(backbone, train_set, test_set, label_fraction=0.5, epochs=8, batch_size=32, seed=0)
    assert res["top1"] > 0.6  # chance is 0.25
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert res["backbone"] is not backbone and res["head"].out_features == 4
    counts = torch.bincount(train_set.labels[res["train_index"]], minlength=4)
    assert counts.tolist() == [25, 25, 25, 25]
    assert len(res["history"]) == 8

    # Freezing: the named module's weights and BN statistics do not move; the rest does.
    plain = PlainDataset(train_set)  # also exercises the DataLoader path and label inference
    frozen = ev.finetune(backbone, plain, test_set, label_fraction=0.2, epochs=2, batch_size=16, freeze=["conv", "bn"])
    trained = frozen["backbone"].state_dict()
    assert all(torch.equal(before[k], trained[k]) for k in before)
    assert not torch.equal(frozen["head"].weight, torch.zeros_like(frozen["head"].weight))
    with pytest.raises(ValueError):
        ev.finetune(backbone, train_set, test_set, epochs=1, freeze=["conv9"])


# ----------------------------------------------------------------------------------------------
# Corruptions and robustness
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ev.CORRUPTIONS)
def test_corruptions(kind):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    errors = []
    for severity in range(1, 6):
        y = ev.corrupt(x, kind, severity, seed=0)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
        assert torch.equal(y, ev.corrupt(x, kind, severity, seed=0))
        errors.append((y - x).pow(2).mean().item())
    assert errors[0] > 0 and all(a < b for a, b in zip(errors, errors[1:])), errors
    if kind == "gaussian_noise":
        assert not torch.equal(ev.corrupt(x, kind, 3, seed=0), ev.corrupt(x, kind, 3, seed=1))
    with pytest.raises(ValueError):
        ev.corrupt(x, kind, 6)


def test_robustness_structure(toy_sets):
    train_set, test_set = toy_sets
    backbone = TinyBackbone()
    res = ev.robustness(backbone, train_set, test_set, kinds=("gaussian_noise", "contrast"), severities=(1, 5), k=5)
    assert set(res) == {"clean", "gaussian_noise", "contrast"}
    assert set(res["contrast"]) == {1, 5}
    assert all(0 <= v <= 1 for v in [res["clean"], *res["gaussian_noise"].values(), *res["contrast"].values()])
    # Passing precomputed training features gives the same numbers (corruptions are seeded).
    feats, labels = ev.extract_features(backbone, train_set)
    res2 = ev.robustness(
        backbone,
        train_set,
        test_set,
        kinds=("gaussian_noise", "contrast"),
        severities=(1, 5),
        k=5,
        train_feats=feats,
        train_labels=labels,
    )
    assert res2 == res
    rows = ev.robustness_rows(res)
    assert len(rows) == 5 and rows[0] == {"corruption": "clean", "severity": 0, "top1": res["clean"]}


# ----------------------------------------------------------------------------------------------
# Cost
# ----------------------------------------------------------------------------------------------


def test_throughput_and_parameters():
    backbone = TinyBackbone()
    assert ev.count_parameters(backbone) == 3 * 8 * 9 + 8 + 2 * 8
    backbone.eval()
    stats = ev.measure_throughput(backbone, 16, batch_size=8, steps=3, warmup=1)
    assert stats["images_per_s"] > 0 and stats["ms_per_batch"] > 0 and stats["peak_mem_mb"] >= 0
    assert stats["device"] == "cpu" and stats["batch_size"] == 8
    running_mean = backbone.bn.running_mean.clone()
    trained = ev.measure_throughput(backbone, (16, 12), batch_size=8, steps=2, warmup=1, train=True)
    assert trained["images_per_s"] > 0 and trained["train"] is True
    assert not backbone.training and backbone.conv.weight.grad is None  # state restored
    assert torch.equal(backbone.bn.running_mean, running_mean)


# ----------------------------------------------------------------------------------------------
# Everything at once
# ----------------------------------------------------------------------------------------------


def test_evaluate_returns_plain_fractions(toy_sets):
    train_set, test_set = toy_sets
    out = ev.evaluate(TinyBackbone(), train_set, test_set, protocols=("knn", "linear", "kmeans"), k=5, linear_epochs=10)
    assert set(out) == {"knn_top1", "linear_top1", "nmi", "ari"}
    assert all(type(v) is float and math.isfinite(v) for v in out.values())
    assert 0 <= out["knn_top1"] <= 1 and 0 <= out["linear_top1"] <= 1
    # Mean colour is visible even to a random conv: far better than chance.
    assert out["knn_top1"] > 0.5
    with pytest.raises(ValueError):
        ev.evaluate(TinyBackbone(), train_set, test_set, protocols=("svm",))

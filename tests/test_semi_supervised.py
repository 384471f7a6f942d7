"""Semi-supervised learning: the labelled subset, how the trainer hides the other labels, the MixMatch and S4L
losses against direct computations, and a few training steps of each method through the trainer."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslbook.augment import mixup, mixup_lambda
from sslbook.config import ConfigError, resolve
from sslbook.data import LabelledStream, hide_labels, labelled_subset, load_dataset
from sslbook.data.base import DataInfo, TensorImageDataset
from sslbook.losses import batch_hard_triplet, l2_consistency, mixmatch_loss, sharpen, soft_cross_entropy
from sslbook.methods import REGISTRY, Method, get_method, register
from sslbook.models import build_backbone
from sslbook.trainer import train

INFO = DataInfo("t", [str(i) for i in range(4)], 16, (0.5,) * 3, (0.25,) * 3)


# ------------------------------------------------------------------------------------------------
# The labelled subset
# ------------------------------------------------------------------------------------------------


def test_labelled_subset_is_deterministic_class_balanced_and_of_the_right_size():
    labels = torch.arange(10).repeat_interleave(100)[torch.randperm(1000, generator=torch.Generator().manual_seed(3))]
    state = torch.get_rng_state()
    a = labelled_subset(labels, 0.05, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator: the run's random stream is untouched
    assert torch.equal(a, labelled_subset(labels, 0.05, seed=0))
    assert not torch.equal(a, labelled_subset(labels, 0.05, seed=1))
    assert len(a) == 50 and len(a.unique()) == 50 and torch.equal(a, a.sort().values)
    assert torch.bincount(labels[a], minlength=10).tolist() == [5] * 10
    assert torch.bincount(labels[labelled_subset(labels, 0.001)], minlength=10).tolist() == [1] * 10  # >= 1 per class
    assert len(labelled_subset(labels, 1.0)) == 1000
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            labelled_subset(labels, bad)


def test_labelled_subset_indexes_the_training_set_and_no_test_image(shapes_root):
    kw = dict(n_train=256, n_test=128, root=str(shapes_root))
    train_set, test_set = load_dataset("shapes", "train", **kw), load_dataset("shapes", "test", **kw)
    index = labelled_subset(train_set.labels, 0.1, seed=0)
    assert int(index.min()) >= 0 and int(index.max()) < len(train_set)
    chosen = {bytes(train_set.images[i].flatten().numpy()) for i in index.tolist()}
    test_images = {bytes(x.flatten().numpy()) for x in test_set.images}
    assert not chosen & test_images
    hidden = hide_labels(train_set, index)
    assert isinstance(hidden, TensorImageDataset) and hidden.images is train_set.images
    keep = torch.zeros(len(train_set), dtype=torch.bool)
    keep[index] = True
    assert torch.equal(hidden.labels[keep], train_set.labels[keep]) and bool((hidden.labels[~keep] == -1).all())


def test_hide_labels_wraps_a_data_set_that_is_not_held_in_memory():
    from torch.utils.data import Dataset

    class Listed(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.zeros(3, 2, 2, dtype=torch.uint8), i % 3

    hidden = hide_labels(Listed(), torch.tensor([1, 4]))
    assert [hidden[i][1] for i in range(6)] == [-1, 1, -1, -1, 1, -1]


def test_label_fraction_is_validated_and_reaches_the_config_from_the_command_line():
    for bad in (0, 0.0, 1.5, -0.2, float("nan")):
        with pytest.raises(ConfigError, match="label_fraction"):
            resolve("supervised", "tiny", label_fraction=bad)
    assert resolve("supervised", "tiny").label_fraction is None
    from sslbook.cli import _parser

    args = _parser().parse_args(["train", "s4l_rotation", "--label-fraction", "0.01"])
    assert args.label_fraction == 0.01


# ------------------------------------------------------------------------------------------------
# The trainer hides the labels outside the subset from a method that trains on labels
# ------------------------------------------------------------------------------------------------


class _Recorder(Method):
    """Records, for each image it is given, its index in the training set and the label it saw."""

    name = "recorder"
    needs_indices = True
    uses_labels = True
    seen: list = []

    def __init__(self, backbone, info, image_size):
        super().__init__(backbone, info, image_size)
        self.head = torch.nn.Linear(backbone.out_dim, 1)

    @torch.no_grad()
    def make_views(self, images, labels, indices=None):
        type(self).seen.append((indices.cpu().clone(), labels.cpu().clone()))
        return images

    def forward(self, views, labels):
        return {"loss": self.head(self.backbone(views)).mean()}


class _BlindRecorder(_Recorder):
    uses_labels = False
    seen: list = []


@pytest.mark.parametrize("cls,data_on", [(_Recorder, "loader"), (_Recorder, "device"), (_BlindRecorder, "loader")])
def test_the_trainer_hides_labels_outside_the_subset_from_a_method_that_uses_labels(cls, data_on, small):
    register("test_recorder", cls)
    cls.seen.clear()
    try:
        kw = {**small, "epochs": 1, "eval_protocols": (), "monitor_knn": 0, "batch_size": 32, "data_on": data_on}
        train("test_recorder", label_fraction=0.1, seed=3, **kw)
    finally:
        REGISTRY.pop("test_recorder")
    train_set = load_dataset("shapes", "train", **small["data_kwargs"])
    subset = set(labelled_subset(train_set.labels, 0.1, seed=3).tolist())
    indices = torch.cat([i for i, _ in cls.seen])
    labels = torch.cat([y for _, y in cls.seen])
    assert len(indices) == len(train_set) // 32 * 32  # one epoch
    for i, y in zip(indices.tolist(), labels.tolist()):
        if cls.uses_labels and i not in subset:
            assert y == -1
        else:
            assert y == int(train_set.labels[i])
    if cls.uses_labels:
        assert 0 < int((labels >= 0).sum()) < len(labels)


def test_a_method_that_trains_on_labels_is_refused_a_training_set_without_any(small):
    from sslbook.data import DataError
    from sslbook.trainer import setup

    info = DataInfo("unlabelled", [str(i) for i in range(4)], 16)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    unlabelled = TensorImageDataset(images, torch.full((64,), -1), info)
    cfg = resolve("supervised", "tiny", backbone="convnet_small", image_size=16, batch_size=16, progress=False)
    with pytest.raises(DataError, match="trains on labels"):
        setup(cfg, train_set=unlabelled)


# ------------------------------------------------------------------------------------------------
# A labelled batch of its own each step
# ------------------------------------------------------------------------------------------------


def test_labelled_stream_walks_the_subset_once_per_pass_and_depends_only_on_the_step():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 3, 2, 2).contiguous()
    data = TensorImageDataset(images, torch.arange(40) % 4, INFO)
    keep = torch.tensor([3, 7, 11, 20, 21, 30, 39])
    stream = LabelledStream(data, keep, per_step=3, seed=5)
    drawn = torch.cat([stream.batch(s)[0][:, 0, 0, 0].long() for s in range(7)])  # 21 images = 3 passes
    for p in range(3):  # each pass holds every labelled image exactly once, in an order of its own
        assert sorted(drawn[7 * p : 7 * p + 7].tolist()) == keep.tolist()
    assert drawn[:7].tolist() != drawn[7:14].tolist() or drawn[7:14].tolist() != drawn[14:].tolist()
    images4, labels4 = LabelledStream(data, keep, per_step=3, seed=5).batch(4)  # a fresh stream (a resumed run)
    assert torch.equal(images4, stream.batch(4)[0]) and torch.equal(labels4, images4[:, 0, 0, 0].long() % 4)
    other = LabelledStream(data, keep, per_step=3, seed=5, rank=1)  # another process: another order
    assert any(not torch.equal(other.batch(s)[0], stream.batch(s)[0]) for s in range(5))
    # a data set that is not held in memory gives the same images item by item
    slow = LabelledStream(hide_labels(torch.utils.data.Subset(data, range(40)), torch.arange(40)), keep, 3, seed=5)
    assert torch.equal(slow.batch(4)[0], images4) and torch.equal(slow.batch(4)[1], labels4)
    with pytest.raises(ValueError, match="at least one image"):
        LabelledStream(data, torch.zeros(0, dtype=torch.long), 3)


class _StreamRecorder(_Recorder):
    """Records each batch's images and labels, and asks for a labelled batch of 8 of its own."""

    name = "stream_recorder"
    needs_indices = False
    labelled_batch_size = 8
    seen: list = []

    @torch.no_grad()
    def make_views(self, images, labels):
        type(self).seen.append((images.cpu().clone(), labels.cpu().clone()))
        return images


@pytest.mark.parametrize("data_on", ["loader", "device"])
def test_a_method_asking_for_a_labelled_batch_gets_it_in_front_of_every_batch(data_on, small):
    register("test_stream_recorder", _StreamRecorder)
    _StreamRecorder.seen.clear()
    try:
        kw = {**small, "epochs": 1, "eval_protocols": (), "monitor_knn": 0, "batch_size": 32, "data_on": data_on}
        train("test_stream_recorder", label_fraction=0.02, seed=1, **kw)
    finally:
        REGISTRY.pop("test_stream_recorder")
    train_set = load_dataset("shapes", "train", **small["data_kwargs"])
    subset = labelled_subset(train_set.labels, 0.02, seed=1)
    by_image = {bytes(train_set.images[i].flatten().tolist()): int(i) for i in subset}
    assert len(_StreamRecorder.seen) == len(train_set) // 32
    for images, labels in _StreamRecorder.seen:
        assert len(labels) == 8 + 32
        for image, label in zip(images[:8], labels[:8]):  # the first 8: images of the labelled subset, labelled
            i = by_image[bytes((image * 255).round().to(torch.uint8).flatten().tolist())]
            assert int(label) == int(train_set.labels[i])
        assert int((labels[8:] >= 0).sum()) < 32  # the batch's own rows keep the data's rate of labels


def test_without_a_label_fraction_or_with_views_made_in_workers_there_is_no_stream_or_a_clear_error(small):
    from sslbook.trainer import setup

    register("test_stream_recorder", _StreamRecorder)
    try:
        cfg = resolve("test_stream_recorder", **{**small, "batch_size": 32, "progress": False})
        assert setup(cfg).labelled is None  # every image labelled: nothing to draw separately
        cfg = resolve("test_stream_recorder", **{**small, "batch_size": 32, "progress": False})
        cfg.label_fraction, cfg.augment_on, cfg.data_on = 0.1, "loader", "loader"
        with pytest.raises(ValueError, match="augment_on='device'"):
            setup(cfg)
    finally:
        REGISTRY.pop("test_stream_recorder")


def test_labelled_batch_is_validated_and_the_semi_supervised_classifiers_are_scored(small):
    with pytest.raises(ValueError, match="labelled_batch must be a whole number"):
        get_method("mixmatch")(build_backbone("convnet_small", INFO), INFO, 16, labelled_batch=-1)
    result = train(
        "s4l_rotation",
        label_fraction=0.05,
        **{
            **small,
            "max_steps": 2,
            "epochs": 1,
            "batch_size": 32,
            "method_kwargs": dict(all_rotations=False, labelled_batch=16),
        },
    )
    assert result.method.labelled_batch_size == 16
    assert 0.0 <= result.metrics["classifier_top1"] <= 1.0
    assert "classifier_top1" not in train("rotnet", **{**small, "max_steps": 1, "epochs": 1, "batch_size": 32}).metrics


# ------------------------------------------------------------------------------------------------
# Sharpening and MixUp
# ------------------------------------------------------------------------------------------------


def test_sharpening_sums_to_one_is_the_identity_at_t1_and_tends_to_one_hot():
    p = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    for t in (0.1, 0.5, 1.0, 2.0):
        assert torch.allclose(sharpen(p, t).sum(1), torch.ones(6), atol=1e-6)
    assert torch.allclose(sharpen(p, 1.0), p, atol=1e-6)
    assert torch.allclose(sharpen(p, 0.5), p**2 / (p**2).sum(1, keepdim=True), atol=1e-6)
    assert torch.allclose(sharpen(p, 1e-3), F.one_hot(p.argmax(1), 5).float(), atol=1e-4)
    # lower temperature, lower entropy
    entropy = [-(q * q.log()).sum(1) for q in (sharpen(p, 1.0), sharpen(p, 0.5), sharpen(p, 0.25))]
    assert bool((entropy[0] > entropy[1]).all() and (entropy[1] > entropy[2]).all())


def test_mixup_weights_are_at_least_a_half_and_mix_images_and_labels_alike():
    torch.manual_seed(0)
    lam = mixup_lambda(1000, 0.75)
    assert bool((lam >= 0.5).all() and (lam <= 1).all()) and lam.std() > 0.05
    x, y = torch.rand(5, 3, 4, 4), torch.softmax(torch.randn(5, 3), 1)
    lam, perm = torch.tensor([0.5, 0.6, 0.7, 0.9, 1.0]), torch.tensor([3, 0, 4, 1, 2])
    mx, my = mixup(x, y, lam, perm)
    for i in range(5):
        assert torch.allclose(mx[i], lam[i] * x[i] + (1 - lam[i]) * x[perm[i]])
        assert torch.allclose(my[i], lam[i] * y[i] + (1 - lam[i]) * y[perm[i]])
    assert torch.allclose(my.sum(1), torch.ones(5))


# ------------------------------------------------------------------------------------------------
# MixMatch against a loop on a fixed batch
# ------------------------------------------------------------------------------------------------


def test_mixmatch_loss_matches_a_loop_over_the_items():
    torch.manual_seed(0)
    m = get_method("mixmatch")(build_backbone("convnet_small", INFO), INFO, 16, k=2, temperature=0.5, lambda_u=10.0)
    m.eval()  # BatchNorm with running statistics, so an item's output does not depend on its batch
    m.lambda_u_now.fill_(7.0)
    n, c, k, t = 6, 4, 2, 0.5
    labels = torch.tensor([2, -1, 0, -1, -1, 3])
    views = {"x": torch.rand(n, 3, 16, 16), "u": torch.rand(k * n, 3, 16, 16)}
    nx = int((labels >= 0).sum())
    m_items = nx + k * n
    lam = 0.5 + 0.5 * torch.rand(m_items)
    perm = torch.randperm(m_items)
    m.draw_mix = lambda count, device: (lam, perm)
    out = m(views, labels)

    def predict(img):
        return m.classifier(m.backbone(img[None]))[0]

    with torch.no_grad():
        inputs, targets = [], []
        for i in range(n):
            if labels[i] >= 0:
                inputs.append(views["x"][i])
                targets.append(F.one_hot(labels[i], c).float())
        guesses = []
        for i in range(n):
            p = sum(torch.softmax(predict(views["u"][j * n + i]), 0) for j in range(k)) / k
            q = p ** (1 / t)
            guesses.append(q / q.sum())
        for j in range(k):
            for i in range(n):
                inputs.append(views["u"][j * n + i])
                targets.append(guesses[i])
        loss_x, loss_u = 0.0, 0.0
        for i in range(m_items):
            xi = lam[i] * inputs[i] + (1 - lam[i]) * inputs[perm[i]]
            yi = lam[i] * targets[i] + (1 - lam[i]) * targets[perm[i]]
            logits = predict(xi)
            if i < nx:
                loss_x += -(yi * torch.log_softmax(logits, 0)).sum() / nx
            else:
                loss_u += ((torch.softmax(logits, 0) - yi) ** 2).sum() / (c * k * n)
    assert torch.allclose(out["loss_x"], torch.as_tensor(loss_x), atol=1e-5)
    assert torch.allclose(out["loss_u"], torch.as_tensor(loss_u), atol=1e-6)
    assert torch.allclose(out["loss"], torch.as_tensor(loss_x + 7.0 * loss_u), atol=1e-5)


def test_mixmatch_loss_pieces_and_the_ramp():
    logits, targets = torch.randn(4, 3), torch.softmax(torch.randn(4, 3), 1)
    assert torch.allclose(soft_cross_entropy(logits, targets), -(targets * logits.log_softmax(1)).sum(1).mean())
    assert torch.allclose(l2_consistency(logits, targets), ((logits.softmax(1) - targets) ** 2).sum(1).mean() / 3)
    total, lx, lu = mixmatch_loss(logits[:2], targets[:2], logits[2:], targets[2:], 5.0)
    assert torch.allclose(total, lx + 5.0 * lu)
    assert float(soft_cross_entropy(logits[:0], targets[:0])) == 0.0  # a batch without labelled images
    m = get_method("mixmatch")(build_backbone("convnet_small", INFO), INFO, 16, lambda_u=75.0, rampup_steps=10)
    assert float(m.lambda_u_now) == 0.0
    assert m.on_step_end(4, 100)["lambda_u"] == pytest.approx(37.5) and float(m.lambda_u_now) == pytest.approx(37.5)
    assert m.on_step_end(50, 100)["lambda_u"] == pytest.approx(75.0)


def test_mixmatch_ema_averages_the_weights_after_each_step_and_is_what_classify_reads():
    torch.manual_seed(0)
    m = get_method("mixmatch")(build_backbone("convnet_small", INFO), INFO, 16, ema_decay=0.75).eval()
    assert all(not p.requires_grad for p in m.ema.parameters())  # the optimiser never sees the average
    before = [p.detach().clone() for p in m.ema.parameters()]
    with torch.no_grad():
        for p in [*m.backbone.parameters(), *m.classifier.parameters()]:
            p.add_(torch.randn_like(p))
    m.on_step_end(0, 10)
    online = [*m.backbone.parameters(), *m.classifier.parameters()]
    for avg, old, new in zip(m.ema.parameters(), before, online):
        torch.testing.assert_close(avg, 0.75 * old + 0.25 * new.detach())
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(m.classify(x), m.ema(x))
    assert not torch.allclose(m.classify(x), m.logits(x))  # the average, not the online network
    plain = get_method("mixmatch")(build_backbone("convnet_small", INFO), INFO, 16)
    assert plain.ema is None and torch.equal(plain.classify(x), plain.logits(x))
    with pytest.raises(ValueError, match="ema_decay"):
        get_method("mixmatch")(build_backbone("convnet_small", INFO), INFO, 16, ema_decay=1.0)


# ------------------------------------------------------------------------------------------------
# S4L: cross-entropy on the labelled images + w × the self-supervised loss
# ------------------------------------------------------------------------------------------------


def test_s4l_rotation_loss_is_labelled_cross_entropy_plus_w_times_rotation_loss():
    torch.manual_seed(0)
    m = get_method("s4l_rotation")(build_backbone("convnet_small", INFO), INFO, 16, weight=0.7).eval()
    labels = torch.tensor([1, -1, -1, 3, 0])
    views = m.make_views(torch.rand(5, 3, 16, 16), labels)
    out = m(views, labels)
    with torch.no_grad():
        feats = m.backbone(views["images"])
        class_labels = labels.repeat(4)
        keep = class_labels >= 0
        ce = F.cross_entropy(m.classifier(feats[keep]), class_labels[keep])
        rot = F.cross_entropy(m.rotation_head(feats), views["targets"])
    assert torch.allclose(out["sup_loss"], ce, atol=1e-5) and torch.allclose(out["self_loss"], rot, atol=1e-5)
    assert torch.allclose(out["loss"], ce + 0.7 * rot, atol=1e-5)
    # no labelled image in the batch: the self-supervised loss alone, and every parameter still gets a gradient
    m.train()
    out = m(views, torch.full((5,), -1))
    assert float(out["sup_loss"].detach()) == 0.0
    out["loss"].backward()
    assert all(p.grad is not None for p in m.parameters())


def test_s4l_rotation_without_classify_rotated_classifies_the_upright_copies_only():
    torch.manual_seed(0)
    m = get_method("s4l_rotation")(
        build_backbone("convnet_small", INFO), INFO, 16, all_rotations=False, classify_rotated=False
    ).eval()
    labels = torch.tensor([1, -1, 2, 3, 0])
    views = m.make_views(torch.rand(5, 3, 16, 16), labels)
    assert len(views["images"]) == 10  # the upright copy, then one rotated copy of each image
    out = m(views, labels)
    with torch.no_grad():
        feats = m.backbone(views["images"][:5])
        keep = labels >= 0
        ce = F.cross_entropy(m.classifier(feats[keep]), labels[keep])
    assert torch.allclose(out["sup_loss"], ce, atol=1e-5)


def test_s4l_exemplar_loss_is_labelled_cross_entropy_plus_w_times_batch_hard_triplet():
    torch.manual_seed(0)
    m = get_method("s4l_exemplar")(build_backbone("convnet_small", INFO), INFO, 16, weight=2.0, copies=3, dim=8)
    m.eval()
    labels = torch.tensor([-1, 2, -1, 0])
    views = m.make_views(torch.rand(4, 3, 16, 16), labels)
    out = m(views, labels)
    with torch.no_grad():
        feats = m.backbone(views)
        z = F.normalize(m.embedding(feats), dim=1)
        ids = torch.arange(4).repeat(3)
        per_anchor = []
        for a in range(12):
            pos = max(float((z[a] - z[p]).norm()) for p in range(12) if ids[p] == ids[a] and p != a)
            neg = min(float((z[a] - z[q]).norm()) for q in range(12) if ids[q] != ids[a])
            per_anchor.append(math.log1p(math.exp(pos - neg)))
        triplet = sum(per_anchor) / 12
        class_labels = labels.repeat(3)
        keep = class_labels >= 0
        ce = F.cross_entropy(m.classifier(feats[keep]), class_labels[keep])
    assert out["self_loss"].item() == pytest.approx(triplet, abs=1e-5)
    assert torch.allclose(out["sup_loss"], ce, atol=1e-5)
    assert out["loss"].item() == pytest.approx(float(ce) + 2.0 * triplet, abs=1e-5)
    # the hard-margin variant
    hinge = batch_hard_triplet(z, ids, margin=0.2)
    assert float(hinge) >= 0


# ------------------------------------------------------------------------------------------------
# Through the trainer
# ------------------------------------------------------------------------------------------------

SMALL = {
    "s4l_rotation": dict(all_rotations=False),
    "s4l_exemplar": dict(copies=2, dim=16),
    "mixmatch": dict(rampup_steps=2),
    "supervised": {},
}


@pytest.mark.parametrize("name", list(SMALL))
def test_trains_through_the_trainer_on_a_label_fraction_and_reports_finite_metrics(name, small):
    kw = {**small, "max_steps": 2, "epochs": 1, "batch_size": 32, "method_kwargs": SMALL[name]}
    result = train(name, label_fraction=0.05, **kw)
    assert result.config.label_fraction == 0.05 and result.method.uses_labels
    assert len(result.history) == 2 and all(math.isfinite(h["loss"]) for h in result.history)
    assert 0.0 <= result.metrics["knn_top1"] <= 1.0


def test_every_semi_supervised_method_has_tiny_and_full_recipes_with_a_label_fraction():
    for name in ("s4l_rotation", "s4l_exemplar", "mixmatch"):
        for preset in ("tiny", "full"):
            cfg = resolve(name, preset)
            assert cfg.label_fraction is not None and 0 < cfg.label_fraction <= 1, (name, preset)
    assert resolve("mixmatch", "full").label_fraction * 50000 == pytest.approx(250)  # CIFAR-10 with 250 labels

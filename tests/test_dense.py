"""Dense protocols (sslbook.dense): the probes read what a spatial map encodes, refuse a backbone without
one, and score boxes correctly."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslbook import dense
from sslbook.data.base import DataInfo, SegmentedImageDataset, TensorImageDataset
from sslbook.data.synthetic import CLASSES, MASK_CLASSES, generate
from sslbook.models import build_backbone

K = len(MASK_CLASSES)
STEP = 20  # the fake images store each pixel's class as the value STEP × class in their red channel


def _info():
    info = DataInfo("fake", list(CLASSES), 32)
    info.extra["mask_classes"] = list(MASK_CLASSES)
    return info


def _encoded(n, seed):
    """The shapes' masks and boxes, with images that encode them: red = class × STEP, and the box and the
    label written into the first pixels of the green channel."""
    _, labels, masks, boxes = generate(n, seed, 32, masks=True)
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    images[:, 0] = masks * STEP
    images[:, 1, 0, :4] = boxes.to(torch.uint8) * 4
    images[:, 1, 0, 4] = labels.to(torch.uint8) * STEP
    return SegmentedImageDataset(images, labels, _info(), masks, boxes)


class MaskBackbone(nn.Module):
    """Features that encode the mask: the one-hot class of each pixel, average-pooled by ``factor``."""

    def __init__(self, factor=1):
        super().__init__()
        self.factor, self.out_dim = factor, K

    def feature_maps(self, x):
        cls = (x[:, 0] * 255 / STEP).round().long().clamp(0, K - 1)
        return F.avg_pool2d(F.one_hot(cls, K).permute(0, 3, 1, 2).float(), self.factor)

    def forward(self, x):
        return self.feature_maps(x).mean(dim=(2, 3))


class BoxBackbone(nn.Module):
    """A 2×2 map whose channels are the box (fractions of the image) and the one-hot label."""

    out_dim = 4 + len(CLASSES)

    def feature_maps(self, x):
        box = x[:, 1, 0, :4] * 255 / 4 / 32
        label = (x[:, 1, 0, 4] * 255 / STEP).round().long()
        f = torch.cat([box, F.one_hot(label, len(CLASSES)).float()], dim=1)
        return f[:, :, None, None].expand(-1, -1, 2, 2)

    def forward(self, x):
        return self.feature_maps(x).mean(dim=(2, 3))


class NoiseBackbone(MaskBackbone):
    def feature_maps(self, x):
        g = torch.Generator().manual_seed(int(x.sum() * 1000) % 2**31)
        return torch.randn(x.shape[0], K, 8, 8, generator=g)


class PooledOnly(nn.Module):
    out_dim = 3

    def forward(self, x):
        return x.mean(dim=(2, 3))


@pytest.fixture(scope="module")
def sets():
    return _encoded(160, 11), _encoded(80, 12)


def test_dense_probe_reads_a_map_that_encodes_the_mask(sets):
    train, test = sets
    full = dense.dense_probe(MaskBackbone(1), train, test, epochs=30, lr=0.05)
    assert full["miou"] > 0.97 and full["pixel_acc"] > 0.99
    assert full["pred"].shape == test.masks.shape and full["map_shape"] == (K, 32, 32)
    coarse = dense.dense_probe(MaskBackbone(4), train, test, epochs=30, lr=0.05)  # 8×8: edges blur
    noise = dense.dense_probe(NoiseBackbone(), train, test, epochs=30, lr=0.05)
    assert full["miou"] > coarse["miou"] > noise["miou"] + 0.3
    assert noise["miou"] < 0.25


def test_segmentation_head_frozen_and_finetuned(sets):
    train, test = sets
    frozen = dense.segmentation_head(MaskBackbone(1), train, test, epochs=20, lr=0.02)
    assert frozen["miou"] > 0.9
    cnn = build_backbone("convnet_small", train.info)
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    tuned = dense.segmentation_head(cnn, train, test, finetune=True, epochs=1)
    assert 0 <= tuned["miou"] <= 1 and tuned["pred"].shape == test.masks.shape
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())  # the caller's backbone is untouched
    assert not all(torch.equal(before[k], v) for k, v in tuned["backbone"].state_dict().items())


def test_detection_probe_reads_a_map_that_encodes_the_box(sets):
    train, test = sets
    r = dense.detection_probe(BoxBackbone(), train, test, epochs=200, lr=0.01, weight_decay=0.0)
    assert r["box_iou"] > 0.85 and r["acc_iou50"] > 0.95 and r["class_acc"] > 0.95 and r["det_acc"] > 0.9
    blind = dense.detection_probe(NoiseBackbone(), train, test, epochs=50)
    assert blind["class_acc"] < 0.4 and blind["box_iou"] < r["box_iou"] - 0.2


def test_box_iou():
    a = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0], [2, 2, 4, 4]])
    b = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10], [0, 0, 0, 0], [0, 0, 10, 10]])
    assert torch.allclose(dense.box_iou(a, b), torch.tensor([1.0, 0.0, 1 / 3, 0.0, 0.04]))


def test_segmentation_scores():
    pred = torch.tensor([[0, 0, 1, 1]])
    target = torch.tensor([[0, 1, 1, 1]])
    s = dense.segmentation_scores(dense.confusion_matrix(pred, target, 3))
    assert s["pixel_acc"] == 0.75 and s["miou"] == pytest.approx((0.5 + 2 / 3) / 2)  # class 2 seen nowhere: left out


@pytest.mark.parametrize(
    "protocol", ["dense_probe", "segmentation_head", "segmentation_head_finetune", "detection_probe"]
)
def test_each_protocol_refuses_a_backbone_without_a_spatial_output(sets, protocol):
    train, test = sets
    fn = {
        "dense_probe": dense.dense_probe,
        "segmentation_head": dense.segmentation_head,
        "segmentation_head_finetune": lambda *a: dense.segmentation_head(*a, finetune=True),
        "detection_probe": dense.detection_probe,
    }[protocol]
    with pytest.raises(
        ValueError, match=r"needs a backbone with a spatial output: a `feature_maps\(x\)`.*PooledOnly has none"
    ):
        fn(PooledOnly(), train, test)


def test_protocols_refuse_data_without_masks(sets):
    train, _ = sets
    plain = TensorImageDataset(train.images, train.labels, train.info)
    with pytest.raises(ValueError, match="per-pixel masks"):
        dense.dense_probe(MaskBackbone(), plain, plain)


@pytest.mark.parametrize("name", ["convnet_small", "vit_tiny", "resnet18_cifar"])
def test_every_backbone_has_a_spatial_map_and_keeps_its_pooled_output(name):
    info = DataInfo("x", ["a", "b"], 32)
    torch.manual_seed(0)
    bb = build_backbone(name, info).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        fmap = dense.spatial_features(bb, x)
        assert fmap.ndim == 4 and fmap.shape[:2] == (2, bb.out_dim)
        if name.startswith("vit"):
            assert fmap.shape[-2:] == (4, 4)
            assert torch.allclose(bb.forward_tokens(x)[:, 1:].mean(1), fmap.mean(dim=(2, 3)), atol=1e-6)
        else:
            assert torch.allclose(bb(x), fmap.mean(dim=(2, 3)), atol=1e-5)


def test_transfer_scores_another_data_set(sets):
    train, test = sets
    r = dense.transfer(MaskBackbone(1), train, test, linear_epochs=5)
    assert set(r) == {"knn_top1", "linear_top1"} and all(0 <= v <= 1 for v in r.values())
    with pytest.raises(ValueError, match="transfer protocols"):
        dense.transfer(MaskBackbone(1), train, test, protocols=("kmeans",))


@pytest.mark.parametrize("method", ["cpc", "split_brain"])
def test_method_specific_backbones_have_a_spatial_map(method):
    from sslbook.config import resolve
    from sslbook.trainer import build_method

    info = DataInfo("x", ["a", "b"], 32)
    m = build_method(resolve(method, "tiny"), info)
    with torch.no_grad():
        fmap = dense.spatial_features(m.backbone.eval(), torch.rand(2, 3, 32, 32))
    assert fmap.ndim == 4 and fmap.shape[1] == m.backbone.out_dim

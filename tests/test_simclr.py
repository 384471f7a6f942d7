"""SimCLR: views, the forward/backward pass, the representation before the head, bad input, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslbook.config import resolve
from sslbook.data.base import DataInfo
from sslbook.losses import nt_xent
from sslbook.methods import get_method, list_methods
from sslbook.methods.simclr import SimCLR
from sslbook.models import build_backbone

INFO = DataInfo("toy", [str(i) for i in range(10)], 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _method(**kwargs):
    torch.manual_seed(0)
    return SimCLR(build_backbone("convnet_small", INFO), INFO, 32, **kwargs)


def _images(n=8, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_registered_with_recipes_for_both_presets():
    assert "simclr" in list_methods() and get_method("simclr") is SimCLR
    tiny, full = resolve("simclr", "tiny"), resolve("simclr", "full")
    assert full.optimizer == "lars" and full.weight_decay == 1e-6 and full.warmup_epochs == 10
    assert full.method_kwargs["temperature"] == 0.5 and tiny.method_kwargs["temperature"] > 0


def test_views_are_two_different_augmentations_of_the_same_shape():
    m = _method()
    x = _images(8, 40)
    v1, v2 = m.make_views(x, torch.zeros(8, dtype=torch.long))
    assert v1.shape == v2.shape == (8, 3, 32, 32)  # resized to the method's image size
    assert 0 <= v1.min() and v1.max() <= 1
    assert not torch.allclose(v1, v2)  # independent draws


def test_without_augmentation_the_views_are_the_image():
    m = _method(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    x = _images(4)
    v1, v2 = m.make_views(x, None)
    assert torch.allclose(v1, x, atol=1e-5) and torch.allclose(v2, x, atol=1e-5)


def test_forward_backward_reaches_backbone_and_head():
    m = _method()
    x = _images(8)
    out = m(m.make_views(x, None), None)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]) and 0 <= float(out["pos_top1"]) <= 1
    out["loss"].backward()
    assert m.backbone.conv1[0].weight.grad.abs().sum() > 0
    assert m.projector[0].weight.grad.abs().sum() > 0


def test_loss_is_nt_xent_on_the_projections_and_the_representation_is_before_the_head():
    m = _method(temperature=0.3).eval()
    x1, x2 = _images(6), _images(6).flip(-1)
    h = m.backbone(torch.cat([x1, x2]))
    z = m.projector(h)
    assert h.shape == (12, m.backbone.out_dim) and z.shape == (12, 128)  # h: N×D before g, z: N×128 after
    assert torch.allclose(m([x1, x2], None)["loss"], nt_xent(z[:6], z[6:], 0.3), atol=1e-6)
    # the head is not part of the evaluated representation
    assert not any(n.startswith("projector") for n, _ in m.backbone.named_parameters())


@pytest.mark.parametrize("kind,dim", [("mlp", 128), ("linear", 128), ("none", None)])
def test_projection_kinds(kind, dim):
    m = _method(projection=kind).eval()
    h, z = m.embed(_images(4))
    assert z.shape == (4, dim or m.backbone.out_dim)
    if kind == "none":
        assert torch.equal(h, z)


def test_bad_inputs_are_refused_clearly():
    for t in (0, -0.1):
        with pytest.raises(ValueError, match="temperature > 0"):
            _method(temperature=t)
    with pytest.raises(ValueError, match="projection"):
        _method(projection="deep")
    with pytest.raises(ValueError, match="crop_scale"):
        _method(crop_scale=(0.5, 0.2))
    m = _method()
    with pytest.raises(ValueError, match="same shape"):
        m([_images(4, 32), _images(4, 24)], None)
    with pytest.raises(ValueError, match="same shape"):
        m([_images(4), _images(3)], None)
    with pytest.raises(ValueError, match="two views"):
        m([_images(4)], None)


def test_training_lowers_the_loss(small):
    from sslbook.trainer import train

    result = train("simclr", **{**small, "epochs": 3, "log_every": 1})
    losses = [h["loss"] for h in result.history]
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2  # NT-Xent goes down from log(2N−1)


def test_cli_smoke_run(shapes_root, tmp_path):
    """The issue's acceptance command: ``python -m sslbook train simclr --epochs 1 --max-steps 5``."""
    import os

    env = {**os.environ, "SSLBOOK_DATA": str(shapes_root), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [
        sys.executable,
        "-m",
        "sslbook",
        "train",
        "simclr",
        "--epochs",
        "1",
        "--max-steps",
        "5",
        "--batch-size",
        "64",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
        "--set",
        "temperature=0.2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["method"] == "simclr" and metrics["steps"] == 5
    assert 0 <= metrics["knn_top1"] <= 1 and 0 <= metrics["linear_top1"] <= 1  # finite: NaN fails both
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["config"]["method_kwargs"]["temperature"] == 0.2


def test_exercise_checkers_accept_the_answer_and_reject_a_wrong_one():
    import math

    import torch.nn.functional as F

    from sslbook.exercises import check_mi_lower_bound, check_nt_xent

    assert check_nt_xent(nt_xent)
    assert not check_nt_xent(lambda z1, z2, t: nt_xent(z1, z2, 2 * t))

    def bound(s):
        return math.log(len(s)) - F.cross_entropy(s, torch.arange(len(s)))

    assert check_mi_lower_bound(bound)
    assert not check_mi_lower_bound(lambda s: -F.cross_entropy(s, torch.arange(len(s))))

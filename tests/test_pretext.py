"""Chapter 2's pretext tasks: rotation, relative patch position, jigsaw."""

import json
import os
import subprocess
import sys

import pytest
import torch

from sslbook.data.base import DataInfo
from sslbook.losses import pretext_cross_entropy
from sslbook.methods import get_method
from sslbook.methods.jigsaw import hamming_distances, permutation_set
from sslbook.methods.relative_position import NEIGHBOURS, OFFSETS
from sslbook.methods.rotnet import rotate_batch
from sslbook.models import build_backbone

INFO = DataInfo("toy", [str(i) for i in range(10)], 32)


def _method(name, image_size=32, **kw):
    torch.manual_seed(0)
    return get_method(name)(build_backbone("convnet_small", INFO), INFO, image_size, **kw)


@pytest.mark.parametrize("n,want", [(10, 8), (30, 7), (100, 6)])
def test_permutation_set_min_hamming(n, want):
    perms = permutation_set(n, min_distance=want)
    assert perms.shape == (n, 9)
    assert all(sorted(p.tolist()) == list(range(9)) for p in perms)  # each row is a permutation
    assert len({tuple(p.tolist()) for p in perms}) == n
    d = hamming_distances(perms, perms)
    d.fill_diagonal_(99)
    assert int(d.min()) >= want


def test_permutation_set_refuses_unreachable_distance():
    with pytest.raises(ValueError, match="minimum Hamming distance"):
        permutation_set(100, min_distance=9)


def test_rotate_batch_is_exact():
    x = torch.rand(2, 3, 8, 8)
    r, t = rotate_batch(x)
    assert r.shape == (8, 3, 8, 8) and t.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(r[2], x[0].rot90(1, (1, 2)))  # 90° counter-clockwise
    assert torch.equal(r[4].rot90(2, (1, 2)), x[0])  # 180° twice is the identity
    # 90° moves the top-right pixel to the top-left
    assert torch.equal(r[2][:, 0, 0], x[0][:, 0, -1])


def _coordinate_images(n, size=32):
    """Images whose red channel is the row and green channel the column (in pixels / size)."""
    ar = torch.arange(size, dtype=torch.float32) / size
    img = torch.stack([ar.view(-1, 1).expand(size, size), ar.view(1, -1).expand(size, size), torch.zeros(size, size)])
    return img.expand(n, 3, size, size).clone()


def test_relative_position_labels_match_patch_geometry():
    m = _method("relative_position", colour="none", gray_p=0.0, patch_size=7)  # no resize, no colour change
    x = _coordinate_images(64)
    v = m.make_views(x, torch.zeros(64, dtype=torch.long), return_corners=True)
    assert v["center"].shape == (64, 3, 7, 7) and set(v["targets"].tolist()) <= set(range(8))
    # each patch is the image at its corner
    c = v["corners"]
    assert torch.allclose(v["center"][:, 0, 0, 0] * 32, c[:, 0, 0].float())
    assert torch.allclose(v["neighbour"][:, 1, 0, 0] * 32, c[:, 1, 1].float())
    # the neighbour lies one cell in the direction named by its label, with a gap of at least `gap` px
    d_row = (v["neighbour"][:, 0, 0, 0] - v["center"][:, 0, 0, 0]) * 32
    d_col = (v["neighbour"][:, 1, 0, 0] - v["center"][:, 1, 0, 0]) * 32
    want = torch.tensor([OFFSETS[t] for t in v["targets"].tolist()], dtype=torch.float32)
    for got, w in ((d_row, want[:, 0]), (d_col, want[:, 1])):
        moved = w != 0
        assert torch.all(torch.sign(got[moved]) == w[moved])
        assert torch.all(got[moved].abs() >= m.patch + m.gap - 1e-4)  # no touching patches
        assert torch.all(got[~moved].abs() <= m.jitter + 1e-4)
    assert NEIGHBOURS == (0, 1, 2, 3, 5, 6, 7, 8)


def test_jigsaw_tiles_follow_the_permutation():
    m = _method("jigsaw", num_permutations=10, gray_p=0.0, tile_size=7, jitter=0)
    x = _coordinate_images(16)
    from sslbook.methods.patches import cut_patches

    cells = torch.arange(9).expand(16, 9)
    tiles = cut_patches(x, cells, 3, m.cell, m.tile, m.gap, m.jitter)
    rows = tiles[:, :, 0, 0, 0] * 32
    cols = tiles[:, :, 1, 0, 0] * 32
    # tile k sits in grid row k // 3, column k % 3, and every tile is 2+ px from its neighbours
    assert torch.all(rows[:, 3:] - rows[:, :6] >= m.tile + m.gap - 1e-4)
    assert torch.all(cols[:, [1, 2, 4, 5, 7, 8]] - cols[:, [0, 1, 3, 4, 6, 7]] >= m.tile + m.gap - 1e-4)
    v = m.make_views(x, torch.zeros(16, dtype=torch.long))
    assert v["tiles"].shape == (16, 9, 3, 7, 7) and v["targets"].max() < 10


@pytest.mark.parametrize("name", ["jigsaw", "relative_position"])
def test_bad_image_size_is_refused_with_the_size_needed(name):
    with pytest.raises(ValueError, match=r"at least 21×21 pixels.*got 16×16"):
        _method(name, image_size=16)
    m = _method(name)
    with pytest.raises(ValueError, match="smaller than the 30-pixel grid"):
        m.make_views(torch.rand(2, 3, 24, 24), torch.zeros(2, dtype=torch.long))


def test_rotnet_refuses_bad_angles():
    with pytest.raises(ValueError, match="two distinct angles"):
        _method("rotnet", angles=(0, 360))
    with pytest.raises(ValueError, match="multiples of 90"):
        rotate_batch(torch.rand(1, 3, 4, 4), (0, 45))


@pytest.mark.parametrize(
    "name,kw",
    [
        ("rotnet", {}),
        ("rotnet", {"angles": (0, 180), "all_rotations": False}),
        ("rotnet", {"crop_scale": (0.3, 1.0), "jitter_p": 0.8, "gray_p": 0.2}),
        ("relative_position", {}),
        ("relative_position", {"colour": "drop", "jitter_p": 0.8}),
        ("jigsaw", {"num_permutations": 10}),
    ],
)
def test_forward_backward(name, kw):
    m = _method(name, **kw)
    x, y = torch.rand(8, 3, 32, 32), torch.zeros(8, dtype=torch.long)
    out = m(m.make_views(x, y), y)
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
    out["loss"].backward()
    grads = [p.grad for p in m.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # the backbone evaluated later takes whole images
    assert m.backbone(x).shape == (8, m.backbone.out_dim)


def test_pretext_cross_entropy_formula():
    logits, t = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    want = -torch.log_softmax(logits, 1)[torch.arange(5), t].mean()
    assert torch.allclose(pretext_cross_entropy(logits.bfloat16(), t), want, atol=0.05)
    assert torch.allclose(pretext_cross_entropy(logits, t), want, atol=1e-6)
    with pytest.raises(ValueError, match="N×K logits"):
        pretext_cross_entropy(logits, t[:3])


@pytest.mark.parametrize("name", ["rotnet", "relative_position", "jigsaw"])
def test_cli_smoke(name, shapes_root):
    # the tiny preset's data (cached in $SSLBOOK_DATA when set, else generated once for the session)
    env = {**os.environ, "SSLBOOK_DATA": os.environ.get("SSLBOOK_DATA", str(shapes_root))}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sslbook",
            "train",
            name,
            "--epochs",
            "1",
            "--max-steps",
            "5",
            "--no-progress",
            "--backbone",
            "convnet_small",
            "--batch-size",
            "64",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["method"] == name and last["steps"] == 5
    assert 0 <= last["knn_top1"] <= 1 and 0 <= last["linear_top1"] <= 1

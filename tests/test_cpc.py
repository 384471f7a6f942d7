"""CPC: the loss against a loop over its formula, the masked context, shapes, bad input, 1-D, the CLI."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sslbook.config import resolve
from sslbook.data.base import DataInfo
from sslbook.losses import cpc_infonce
from sslbook.methods import get_method, list_methods
from sslbook.methods.cpc import CPC, ContextNetwork, MaskedConv2d, SequenceCPC, cut_grid, grid_size, toy_sequences
from sslbook.models import build_backbone

INFO = DataInfo("toy", [str(i) for i in range(10)], 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _method(**kwargs):
    torch.manual_seed(0)
    return CPC(build_backbone("convnet_small", INFO), INFO, kwargs.pop("image_size", 32), **kwargs)


def _images(n=4, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _loop_cpc_infonce(z, preds, steps, temperature, normalize):
    """The formula written out: for every prediction, a softmax over every encoding of the batch."""
    n, t = z.shape[:2]
    cols = z.shape[2] if z.dim() == 4 else 1
    z4 = z if z.dim() == 4 else z.unsqueeze(2)
    cands = [z4[a, b, c] for a in range(n) for b in range(t) for c in range(cols)]
    per_k = []
    for k, p in zip(steps, preds):
        p4 = p if p.dim() == 4 else p.unsqueeze(2)
        terms = []
        for a in range(n):
            for b in range(t - k):
                for c in range(cols):
                    q = p4[a, b, c]
                    scores = []
                    for cand in cands:
                        s = F.cosine_similarity(q, cand, dim=0) if normalize else torch.dot(q, cand)
                        scores.append(s / temperature)
                    scores = torch.stack(scores)
                    pos = (a * t + b + k) * cols + c
                    terms.append(-(scores[pos] - torch.logsumexp(scores, 0)))
        per_k.append(torch.stack(terms).mean())
    return torch.stack(per_k).mean()


@pytest.mark.parametrize(
    "shape,steps,temperature,normalize",
    [
        ((3, 4, 3, 5), (1, 2), 1.0, False),  # a 4×3 grid of 5-d encodings, 3 images
        ((2, 3, 3, 4), (2,), 0.3, True),
        ((3, 6, 4), (1, 2, 3), 0.5, False),  # a 1-D sequence: N×T×D
    ],
)
def test_loss_matches_a_loop_over_its_formula(shape, steps, temperature, normalize):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(*shape, generator=g)
    preds = [torch.randn(shape[0], shape[1] - k, *shape[2:], generator=g) for k in steps]
    want = _loop_cpc_infonce(z, preds, steps, temperature, normalize)
    got = cpc_infonce(z, preds, steps, temperature, normalize)
    assert torch.allclose(got, want, atol=1e-5), (got, want)


def test_loss_reference_values():
    # uninformative predictions: log(number of candidates); the true encoding scored far above: ≈ 0
    z = torch.randn(2, 3, 4, 8)
    zero = [torch.zeros(2, 2, 4, 8)]
    assert math.isclose(float(cpc_infonce(z, zero, (1,))), math.log(2 * 3 * 4), rel_tol=1e-5)
    perfect = [50 * z[:, 1:]]
    z_unit = F.normalize(z, dim=-1)
    assert float(cpc_infonce(z_unit, [50 * z_unit[:, 1:]], (1,))) < 1e-3
    assert float(cpc_infonce(z, perfect, (1,), normalize=True, temperature=0.01)) < 1e-3


def test_loss_refuses_bad_input():
    z = torch.randn(2, 3, 3, 4)
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature > 0"):
            cpc_infonce(z, [z[:, 1:]], (1,), temperature=t)
    with pytest.raises(ValueError, match="shape"):
        cpc_infonce(z, [z[:, 2:]], (1,))
    with pytest.raises(ValueError, match="step k=3"):
        cpc_infonce(z, [z[:, 3:]], (3,))
    with pytest.raises(ValueError, match="one prediction tensor per step"):
        cpc_infonce(z, [z[:, 1:]], (1, 2))


def test_masked_conv_and_context_network_never_see_rows_below():
    torch.manual_seed(0)
    conv = MaskedConv2d(4, 4, 3)
    assert conv.mask[:, :, 2].sum() == 0 and conv.mask[:, :, :2].all()
    net = ContextNetwork(6, 8, layers=3)
    g = 5
    z = torch.randn(2, 6, g, g, requires_grad=True)
    c = net(z)
    for i in range(g):
        (grad,) = torch.autograd.grad(c[:, :, i].sum(), z, retain_graph=True)
        assert torch.all(grad[:, :, i + 1 :] == 0), f"c at row {i} depends on rows below it"
        assert grad[:, :, : i + 1].abs().sum() > 0  # and it does depend on its own row and those above
    # perturbing the rows below row i leaves c up to row i unchanged, exactly
    z2 = z.detach().clone()
    z2[:, :, 3:] += torch.randn_like(z2[:, :, 3:]) * 10
    assert torch.equal(net(z2)[:, :, :3], net(z.detach())[:, :, :3])
    # with G − 1 blocks (the method's default), the bottom-left context sees the top-right patch:
    # the receptive field covers every row above, whole
    full = ContextNetwork(6, 8, layers=g - 1)
    (grad,) = torch.autograd.grad(full(z)[:, :, g - 1, 0].sum(), z)
    assert grad[:, :, 0, g - 1].abs().sum() > 0 and torch.all(grad[:, :, g:] == 0)


def test_cpc_method_context_is_causal_end_to_end():
    m = _method().eval()  # eval: batch norm uses running statistics, so patches do not mix through it
    patches = m.make_views(_images(2), None)[0]
    z, c, preds = m.predict(patches)
    changed = patches.clone()
    changed[:, 2:] = torch.rand_like(changed[:, 2:])  # new patches in the last row (grid 3×3)
    z2, c2, _ = m.predict(changed)
    assert torch.equal(c2[:, :2], c[:, :2]) and not torch.allclose(z2[:, 2:], z[:, 2:])


def test_shapes_and_representation():
    m = _method(steps=(1, 2))
    x = _images(4)
    (patches,) = m.make_views(x, torch.zeros(4, dtype=torch.long))
    assert m.grid == 3 and patches.shape == (4, 3, 3, 3, 16, 16)
    z, c, preds = m.predict(patches)
    d = m.backbone.out_dim
    assert z.shape == (4, 3, 3, d) and c.shape[:3] == (4, 3, 3)
    assert [p.shape for p in preds] == [(4, 2, 3, d), (4, 1, 3, d)]
    out = m([patches], None)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]) and 0 <= float(out["pred_top1"]) <= 1
    out["loss"].backward()
    assert m.backbone.encoder.conv1[0].weight.grad.abs().sum() > 0 and m.predictors[1].weight.grad.abs().sum() > 0
    # the evaluated representation: the patch encoder on the grid of the whole image, mean-pooled
    m.eval()
    with torch.no_grad():
        h = m.backbone(x)
        grid = cut_grid(x, 16, 8)
        want = m.backbone.encoder(grid.flatten(0, 2)).view(4, 9, -1).mean(1)
    assert h.shape == (4, m.backbone.out_dim) and torch.allclose(h, want, atol=1e-5)
    assert torch.equal(grid[1, 2, 1], x[1, :, 16:32, 8:24])  # row 2, column 1 of the grid


def test_without_augmentation_the_patches_are_the_image():
    m = _method(flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    x = _images(2)
    (patches,) = m.make_views(x, None)
    assert torch.equal(patches, cut_grid(x, 16, 8))
    m2 = _method(drop_p=1.0, jitter_p=0.0, gray_p=0.0, flip_p=0.0)
    (dropped,) = m2.make_views(x, None)
    assert not torch.allclose(dropped, patches)


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match=r"cannot tile 30×30.*16 \+ k·8.*\b32\b"):
        _method(image_size=30)
    with pytest.raises(ValueError, match="temperature > 0"):
        _method(temperature=0)
    with pytest.raises(ValueError, match="temperature > 0"):
        _method(temperature=-0.5)
    with pytest.raises(ValueError, match="steps"):
        _method(steps=(3,))  # a 3×3 grid has no row 3 below
    with pytest.raises(ValueError, match="1×1 grid"):
        grid_size(16, 16, 8)
    m = _method()
    with pytest.raises(ValueError, match="cannot tile 36×36"):
        m.backbone(_images(2, 36))  # the representation refuses an image size its grid cannot tile
    with pytest.raises(ValueError, match="expects patches"):
        m([_images(2)], None)
    with pytest.raises(ValueError, match="temperature > 0"):
        SequenceCPC(4, temperature=0)


def test_registered_with_recipes_for_both_presets():
    assert "cpc" in list_methods() and get_method("cpc") is CPC
    tiny, full = resolve("cpc", "tiny"), resolve("cpc", "full")
    for cfg in (tiny, full):
        kw = cfg.method_kwargs
        grid_size(cfg.image_size, kw["patch"], kw["stride"])  # the recipe's grid tiles its images
        assert kw["temperature"] > 0
    assert full.data in ("cifar10", "stl10")


def test_sequence_cpc_learns_the_toy():
    torch.manual_seed(0)
    x, speed, state, style = toy_sequences(64, steps=12, dim=8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (64, 12, 8) and state.shape == (64, 12) and style.shape == (64, 4)
    assert torch.equal((state[:, 1:] - state[:, :-1]) % 17, speed[:, None].expand(64, 11))  # s advances by v
    model = SequenceCPC(8, dim=16, context_dim=16, steps=(1, 2))
    out = model(x)
    assert out["z"].shape == (64, 12, 16) and out["c"].shape == (64, 12, 16)
    assert [p.shape for p in out["preds"]] == [(64, 11, 16), (64, 10, 16)]
    # causal: changing the future leaves the context of the past unchanged
    x2 = x.clone()
    x2[:, 6:] = torch.randn_like(x2[:, 6:])
    assert torch.allclose(model(x2)["c"][:, :6], out["c"][:, :6])
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = float(out["loss"].detach())
    for _ in range(60):
        loss = model(toy_sequences(64, steps=12, dim=8)[0])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > math.log(64 * 12) - 1.0  # starts near chance
    assert float(model(x)["loss"].detach()) < first - 0.5


def test_training_lowers_the_loss(small):
    from sslbook.trainer import train

    result = train("cpc", **{**small, "epochs": 3, "log_every": 1})
    losses = [h["loss"] for h in result.history]
    assert all(map(math.isfinite, losses))
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2


def test_cli_smoke_run(shapes_root, tmp_path):
    env = {**os.environ, "SSLBOOK_DATA": str(shapes_root), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [
        sys.executable,
        "-m",
        "sslbook",
        "train",
        "cpc",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--batch-size",
        "32",
        "--backbone",
        "convnet_small",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
        "--set",
        "steps=[1]",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["method"] == "cpc" and metrics["steps"] == 3
    assert 0 <= metrics["knn_top1"] <= 1 and 0 <= metrics["linear_top1"] <= 1
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["config"]["method_kwargs"]["steps"] == [1]
    bad_cmd = [str(tmp_path / "bad") if c == str(tmp_path / "run") else c for c in cmd[:-1]] + ["temperature=0"]
    bad = subprocess.run(bad_cmd, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "temperature > 0" in bad.stderr


def test_exercise_checkers_accept_the_answer_and_reject_a_wrong_one():
    from sslbook.exercises import check_causal_mask, check_cpc_infonce

    assert check_cpc_infonce(lambda z, preds, steps, t: cpc_infonce(z, preds, steps, t))
    assert not check_cpc_infonce(lambda z, preds, steps, t: cpc_infonce(z, preds, steps, t, normalize=True))
    # a classic mistake: negatives from the same image only
    assert not check_cpc_infonce(
        lambda z, preds, steps, t: torch.stack(
            [cpc_infonce(z[i : i + 1], [p[i : i + 1] for p in preds], steps, t) for i in range(len(z))]
        ).mean()
    )

    def mask(k):
        m = torch.zeros(k, k)
        m[: k // 2 + 1] = 1
        return m

    assert check_causal_mask(mask)
    assert not check_causal_mask(lambda k: torch.tril(torch.ones(k, k)))
    assert torch.equal(MaskedConv2d(2, 2, 5).mask[0, 0], mask(5))

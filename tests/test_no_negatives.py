"""BYOL, SimSiam, Barlow Twins: the EMA update, views, forward/backward, collapse switches, bad input."""

import pytest
import torch

from sslbook.data.base import DataInfo
from sslbook.methods import get_method
from sslbook.models import build_backbone
from sslbook.models.ema import ema_update_, momentum_copy
from sslbook.optim import param_groups

INFO = DataInfo("toy", [str(i) for i in range(10)], 16, (0.5,) * 3, (0.25,) * 3)


def make(name, **kw):
    torch.manual_seed(0)
    return get_method(name)(build_backbone("convnet_small", INFO), INFO, 16, **kw)


def test_ema_update_follows_its_formula_and_copies_buffers():
    online = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    target = momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    before = [p.clone() for p in target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
        online[1].running_mean.fill_(3.0)
    ema_update_(target, online, 0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    assert torch.equal(target[1].running_mean, online[1].running_mean)
    with pytest.raises(ValueError, match="momentum"):
        ema_update_(target, online, 1.5)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("byol", dict(proj_dim=16, hidden_dim=32, blur_p=(0.0, 0.0))),
        ("simsiam", dict(proj_dim=32, pred_hidden=8)),
        ("barlow_twins", dict(proj_dim=32, blur_p=(0.0, 0.0))),
    ],
)
def test_forward_backward_and_views(name, kw):
    m = make(name, **kw)
    x = torch.rand(8, 3, 16, 16)
    views = m.make_views(x, torch.zeros(8, dtype=torch.long))
    assert len(views) == 2 and views[0].shape == (8, 3, 16, 16) and not torch.equal(views[0], views[1])
    out = m(views, None)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert m.backbone.conv1[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        m([views[0], views[1][:, :, :8, :8]], None)


def test_byol_target_gets_no_gradient_and_follows_the_momentum_schedule():
    m = make("byol", proj_dim=16, hidden_dim=32, base_momentum=0.9, blur_p=(0.0, 0.0))
    x = torch.rand(8, 3, 16, 16)
    m(m.make_views(x, None), None)["loss"].backward()
    assert all(p.grad is None for p in m.target_backbone.parameters())
    assert m.on_step_end(0, 10)["momentum"] == pytest.approx(0.9)
    assert m.on_step_end(5, 10)["momentum"] == pytest.approx(0.95)
    assert m.on_step_end(10, 10)["momentum"] == pytest.approx(1.0)


def test_simsiam_predictor_keeps_a_fixed_rate_and_switches_work():
    m = make("simsiam", proj_dim=32, pred_hidden=8)
    groups = param_groups(m, 5e-4)
    fixed = [g for g in groups if g["fixed_lr"]]
    assert sum(len(g["params"]) for g in fixed) == len(list(m.predictor.parameters()))
    no_pred = make("simsiam", proj_dim=32, pred_hidden=8, predictor=False)
    assert isinstance(no_pred.predictor, torch.nn.Identity)
    # without stop-gradient the loss still backpropagates through both branches
    m2 = make("simsiam", proj_dim=32, pred_hidden=8, stop_gradient=False)
    m2(m2.make_views(torch.rand(8, 3, 16, 16), None), None)["loss"].backward()


@pytest.mark.parametrize(
    "name,kw",
    [("byol", dict(proj_dim=16, hidden_dim=32, blur_p=(0.0, 0.0))), ("simsiam", dict(proj_dim=32, pred_hidden=8))],
)
def test_predictor_lr_scale_applies_to_the_predictor_only(name, kw):
    m = make(name, predictor_lr_scale=10.0, **kw)
    groups = param_groups(m, 5e-4)
    predictor = {id(p) for p in m.predictor.parameters()}
    for g in groups:
        in_pred = {id(p) in predictor for p in g["params"]}
        assert len(in_pred) == 1, "a group mixes predictor and other parameters"
        assert g["lr_scale"] == (10.0 if in_pred.pop() else 1.0)
    assert sum(len(g["params"]) for g in groups if g["lr_scale"] == 10.0) == len(predictor)
    with pytest.raises(ValueError, match="predictor_lr_scale"):
        make(name, predictor_lr_scale=0.0, **kw)


def test_barlow_twins_refuses_bad_options():
    with pytest.raises(ValueError, match="reduction"):
        make("barlow_twins", proj_dim=16, reduction="max")
    with pytest.raises(ValueError, match="lambd"):
        make("barlow_twins", proj_dim=16, lambd=-1.0)


def _simsiam_output_std(steps=40, **switches):
    """A few dozen SGD steps of SimSiam on 32 random 16-px images; the std of the l2-normalised outputs at the end.
    A high rate and weight decay make the collapse (when a switch allows it) quick enough for a unit test."""
    torch.manual_seed(0)
    m = make("simsiam", proj_dim=32, pred_hidden=8, **switches)
    opt = torch.optim.SGD(m.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-2)
    x = torch.rand(32, 3, 16, 16)
    for _ in range(steps):
        out = m(m.make_views(x, None), None)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    return float(out["z_std"])


def test_simsiam_collapses_without_stop_gradient_or_predictor_but_not_with_both():
    healthy = 1 / 32**0.5  # ≈ 1/√d for outputs spread over the sphere
    full = _simsiam_output_std()
    assert full > 0.6 * healthy, full
    for switches in (dict(stop_gradient=False), dict(predictor=False)):
        std = _simsiam_output_std(**switches)
        assert std < 0.3 * healthy and std < full / 3, (switches, std, full)


def test_output_std_is_one_over_sqrt_d_when_spread_and_zero_when_collapsed():
    m = make("simsiam", proj_dim=32, pred_hidden=8)
    x = torch.rand(64, 3, 16, 16)
    assert m([x, x], None)["z_std"] == pytest.approx(1 / 32**0.5, rel=0.15)
    with torch.no_grad():  # a projector whose output is one fixed vector: the collapse the monitor must show
        last = m.projector[-1]
        last.weight.zero_(), last.bias.fill_(1.0)
    assert m([x, x], None)["z_std"] < 1e-4


def test_byol_target_moves_only_by_the_moving_average():
    m = make("byol", proj_dim=16, hidden_dim=32, base_momentum=0.5, blur_p=(0.0, 0.0))
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    x = torch.rand(8, 3, 16, 16)
    target_before = [p.clone() for p in m.target_backbone.parameters()]
    m(m.make_views(x, None), None)["loss"].backward()
    opt.step()  # the optimiser step alone leaves the target where it was
    assert all(torch.equal(a, b) for a, b in zip(target_before, m.target_backbone.parameters()))
    online = [p.detach().clone() for p in m.backbone.parameters()]
    m.on_step_end(0, 10)  # τ = 0.5 at step 0
    for t, b, o in zip(m.target_backbone.parameters(), target_before, online):
        assert torch.allclose(t, 0.5 * b + 0.5 * o, atol=1e-6)


def test_barlow_twins_mean_reduction_is_lambda_one_over_d_minus_one_and_logs_output_std():
    from sslbook.losses import barlow_twins

    z1, z2 = torch.randn(16, 9), torch.randn(16, 9)
    assert torch.allclose(barlow_twins(z1, z2, reduction="mean"), barlow_twins(z1, z2, lambd=1 / 8), atol=1e-6)
    m = make("barlow_twins", proj_dim=16, blur_p=(0.0, 0.0))
    assert "z_std" in m(m.make_views(torch.rand(8, 3, 16, 16), None), None)


def test_chapter_8_exercise_checkers_accept_the_answer_and_refuse_wrong_ones():
    import torch.nn.functional as F

    from sslbook.exercises import check_barlow_twins_loss, check_byol_loss, check_output_std
    from sslbook.losses import barlow_twins

    def byol_loss(p, z):
        return (F.normalize(p, dim=1) - F.normalize(z.detach(), dim=1)).pow(2).sum(1).mean()

    assert check_byol_loss(byol_loss)
    assert not check_byol_loss(
        lambda p, z: (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1).mean()
    )  # no stop-gradient
    assert not check_byol_loss(lambda p, z: (p - z.detach()).pow(2).sum(1).mean())  # not normalised
    assert check_barlow_twins_loss(lambda a, b, lambd: barlow_twins(a, b, lambd))
    assert not check_barlow_twins_loss(lambda a, b, lambd: barlow_twins(a, b, lambd, "mean"))
    assert not check_barlow_twins_loss(
        lambda a, b, lambd: ((a.T @ b / len(a)) - torch.eye(a.shape[1])).pow(2).sum()
    )  # not standardised
    assert check_output_std(lambda z: F.normalize(z, dim=1).std(0).mean())
    assert not check_output_std(lambda z: z.std(0).mean())  # not normalised
    assert not check_output_std(lambda z: F.normalize(z, dim=1).std(1).mean())  # std over the wrong axis

    def todo(*a):
        raise NotImplementedError

    assert not check_byol_loss(todo) and not check_barlow_twins_loss(todo) and not check_output_std(todo)


def test_alignment_and_uniformity_match_their_definitions_and_limits():
    from sslbook.losses import alignment, uniformity

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    want = sum(float((an[i] - bn[i]).norm() ** 2) for i in range(7)) / 7
    assert alignment(a, b).item() == pytest.approx(want, rel=1e-5)
    assert alignment(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)  # the same directions
    pairs = [(i, j) for i in range(7) for j in range(i + 1, 7)]
    want = torch.tensor(sum(float(torch.exp(-2 * (an[i] - an[j]).norm() ** 2)) for i, j in pairs) / len(pairs)).log()
    assert uniformity(a).item() == pytest.approx(float(want), rel=1e-5)
    assert uniformity(torch.ones(6, 4)).item() == pytest.approx(0.0, abs=1e-6)  # collapsed: every row the same point
    assert uniformity(torch.eye(8)).item() < uniformity(torch.eye(8) + 3).item()  # spread beats nearly-collapsed
    with pytest.raises(ValueError, match="N ≥ 2"):
        uniformity(torch.ones(1, 4))


def test_byol_logs_alignment_uniformity_and_raft_terms_without_changing_its_loss():
    from sslbook.losses import alignment, negative_cosine, uniformity

    torch.manual_seed(0)
    m = get_method("byol")(build_backbone("convnet_small", INFO), INFO, 16, proj_dim=16, hidden_dim=32).eval()
    views = m.make_views(torch.rand(6, 3, 16, 16), torch.zeros(6, dtype=torch.long))
    out = m(views, None)
    with torch.no_grad():
        y = m.projector(m.backbone(torch.cat(views)))
        p = m.predictor(y)
        z = m.target_projector(m.target_backbone(torch.cat(views)))
    (y1, y2), (p1, p2), (z1, z2) = y.chunk(2), p.chunk(2), z.chunk(2)
    assert out["align"].item() == pytest.approx(alignment(y1, y2).item(), rel=1e-5)
    assert out["uniform"].item() == pytest.approx(uniformity(y1).item(), rel=1e-5)
    assert out["align_pred"].item() == pytest.approx(alignment(p1, p2).item(), rel=1e-5)
    assert out["cross_model"].item() == pytest.approx(alignment(p1, z1).item(), rel=1e-5)
    loss = (2 + 2 * negative_cosine(p1, z2)) + (2 + 2 * negative_cosine(p2, z1))
    assert out["loss"].item() == pytest.approx(loss.item(), rel=1e-5)

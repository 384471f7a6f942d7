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


@pytest.mark.parametrize("name,kw", [
    ("byol", dict(proj_dim=16, hidden_dim=32, blur_p=(0.0, 0.0))),
    ("simsiam", dict(proj_dim=32, pred_hidden=8)),
    ("barlow_twins", dict(proj_dim=32, blur_p=(0.0, 0.0))),
])
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


def test_barlow_twins_refuses_bad_options():
    with pytest.raises(ValueError, match="reduction"):
        make("barlow_twins", proj_dim=16, reduction="max")
    with pytest.raises(ValueError, match="lambd"):
        make("barlow_twins", proj_dim=16, lambd=-1.0)

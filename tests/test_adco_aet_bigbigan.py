"""AdCo, AET and BigBiGAN: their losses against hand computations, the two-player games' gradients, the
transformations' parameters, and a few steps of each through the trainer."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslbook.data.base import DataInfo
from sslbook.losses import (
    adversarial_contrast,
    grad_reverse,
    info_nce,
)
from sslbook.methods import get_method
from sslbook.models import build_backbone
from sslbook.optim import build_optimizer
from sslbook.trainer import train

INFO = DataInfo("t", [str(i) for i in range(4)], 32, (0.5,) * 3, (0.25,) * 3)
LABELS = torch.zeros(8, dtype=torch.long)


def _make(name, **kw):
    torch.manual_seed(0)
    return get_method(name)(build_backbone("convnet_small", INFO), INFO, 32, **kw)


# ---------------------------------------------------------------- AdCo


def _loop_info_nce(q, k, neg, tau):
    q, k, neg = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(neg, dim=1)
    total = 0.0
    for i in range(q.shape[0]):
        pos = torch.exp(q[i] @ k[i] / tau)
        negs = sum(torch.exp(q[i] @ neg[m] / tau) for m in range(neg.shape[0]))
        total = total - torch.log(pos / (pos + negs))
    return total / q.shape[0]


def test_adco_loss_is_infonce_against_the_negatives_and_its_gradients_are_the_two_players():
    torch.manual_seed(0)
    q, k = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    w = torch.randn(7, 8, dtype=torch.float64)
    q.requires_grad_(True)
    w.requires_grad_(True)
    loss, adv = adversarial_contrast(q.float(), k.float(), w.float(), temperature=0.12, negative_temperature=0.02)
    ref_enc, ref_adv = _loop_info_nce(q, k, w, 0.12), _loop_info_nce(q, k, w, 0.02)
    assert loss.item() == pytest.approx(ref_enc.item(), rel=1e-5)
    assert adv.item() == pytest.approx(ref_adv.item(), rel=1e-5)
    assert loss.item() == pytest.approx(info_nce(q, k, w, 0.12).item(), rel=1e-5)
    g_q, g_w = torch.autograd.grad(loss, (q, w))
    ref_g_q = torch.autograd.grad(ref_enc, q)[0]  # the encoder: descends InfoNCE at τ, negatives fixed
    ref_g_w = torch.autograd.grad(ref_adv, w)[0]  # the adversaries: the gradient of InfoNCE at τ_n ...
    torch.testing.assert_close(g_q, ref_g_q, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_w, -ref_g_w, rtol=1e-4, atol=1e-6)  # ... reversed: a descent step ascends it
    x = torch.randn(3, requires_grad=True)
    (grad_reverse(x, 2.0) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [-2.0, -4.0, -6.0]


def test_one_optimiser_step_moves_the_negatives_up_the_loss_and_the_encoder_down():
    m = _make("adco", num_negatives=32, mlp_hidden=32, dim=16, bn_splits=1, momentum=0.99, negatives_lr_scale=50.0)
    m.filled.fill_(32)  # skip the initial writing of keys: the game from the first step
    with torch.no_grad():  # negatives near the queries, so both players have a gradient at τ_n = 0.02
        x = torch.rand(8, 3, 32, 32)
        m.negatives.copy_(F.normalize(m.projector(m.backbone(x)).repeat(4, 1) + 0.3 * torch.randn(32, 16), dim=1))
    torch.manual_seed(1)
    views = m.make_views(x, LABELS)
    with torch.no_grad():
        q0 = m.projector(m.backbone(views[0]))
        k = m.encoder_k(views[1])
    w0 = m.negatives.detach().clone()
    opt = build_optimizer("sgd", m, lr=0.01, weight_decay=0.0, momentum=0.0)
    out = m(views, LABELS)
    assert out["loss"].item() == pytest.approx(info_nce(q0, k, w0, 0.12).item(), rel=1e-4)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    m.on_step_end(0, 10)
    w1 = m.negatives.detach()
    assert torch.allclose(w1.norm(dim=1), torch.ones(32), atol=1e-5)  # renormalised
    assert not torch.equal(w0, w1)
    # the adversaries ascended their loss on the very same queries and keys ...
    assert info_nce(q0, k, w1, 0.02) > info_nce(q0, k, w0, 0.02)
    # ... while the encoder's step descended the contrastive loss against the negatives it saw
    with torch.no_grad():
        q1 = m.projector(m.backbone(views[0]))
    assert info_nce(q1, k, w0, 0.12) < info_nce(q0, k, w0, 0.12)


def test_adco_writes_the_first_keys_into_the_negatives_after_the_step():
    m = _make("adco", num_negatives=12, mlp_hidden=32, dim=16, bn_splits=1)
    w0 = m.negatives.detach().clone()
    views = m.make_views(torch.rand(8, 3, 32, 32), LABELS)
    with torch.no_grad():
        k = F.normalize(m.encoder_k(views[1]), dim=1)
    m(views, LABELS)
    assert torch.equal(m.negatives.detach(), w0)  # nothing written during the forward pass
    m.on_step_end(0, 10)
    torch.testing.assert_close(m.negatives.detach()[:8], k, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.negatives.detach()[8:], w0[8:])
    assert int(m.filled) == 8
    m(m.make_views(torch.rand(8, 3, 32, 32), LABELS), LABELS)
    m.on_step_end(1, 10)
    assert int(m.filled) == 12  # only the 4 rows left were written
    m(m.make_views(torch.rand(8, 3, 32, 32), LABELS), LABELS)
    before = m.negatives.detach().clone()
    m.on_step_end(2, 10)
    assert torch.allclose(m.negatives.detach(), before)  # full: only the optimiser moves them now


# ---------------------------------------------------------------- through the trainer

SMALL = {
    "adco": dict(num_negatives=128, mlp_hidden=32, dim=16, bn_splits=2),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_trains_through_the_trainer_with_finite_metrics(name, small):
    result = train(name, **{**small, "max_steps": 3, "epochs": 1, "method_kwargs": SMALL[name]})
    assert len(result.history) == 3 and all(math.isfinite(h["loss"]) for h in result.history)
    assert all(math.isfinite(v) for h in result.history for v in h.values() if isinstance(v, float))
    assert 0.0 <= result.metrics["knn_top1"] <= 1.0

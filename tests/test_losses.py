"""The contrastive losses against slow reference implementations written from the formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslbook.losses import info_nce, nt_xent


def _nt_xent_reference(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        sims = torch.stack([z[i] @ z[k] / t for k in range(n2) if k != i])
        total += -(z[i] @ z[j] / t - torch.logsumexp(sims, 0))
    return total / n2


def test_nt_xent_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for t in (0.1, 0.5, 1.0):
        assert torch.allclose(nt_xent(z1, z2, t), _nt_xent_reference(z1, z2, t), atol=1e-5)


def test_nt_xent_is_low_for_matching_views_and_log_2n_minus_1_for_identical_ones():
    z = torch.eye(8)
    assert nt_xent(z, z, temperature=0.05) < 1e-3  # twins identical, all others orthogonal
    same = torch.ones(4, 3)
    assert torch.allclose(nt_xent(same, same), torch.tensor(math.log(2 * 4 - 1)), atol=1e-5)


def test_info_nce_with_a_queue_matches_the_formula():
    g = torch.Generator().manual_seed(1)
    q, k, neg = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(10, 8, generator=g)
    t = 0.2
    qn, kn, nn_ = (F.normalize(x, dim=1) for x in (q, k, neg))
    ref = torch.stack(
        [
            -(qn[i] @ kn[i] / t - torch.logsumexp(torch.cat([(qn[i] @ kn[i]).view(1), nn_ @ qn[i]]) / t, 0))
            for i in range(4)
        ]
    ).mean()
    assert torch.allclose(info_nce(q, k, neg, temperature=t), ref, atol=1e-5)


def test_info_nce_without_negatives_uses_the_batch():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    t = 0.5
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / t
    assert torch.allclose(info_nce(q, k, None, t), F.cross_entropy(logits, torch.arange(5)), atol=1e-6)


def test_gradients_flow_and_bad_shapes_are_refused():
    z1 = torch.randn(4, 6, requires_grad=True)
    nt_xent(z1, torch.randn(4, 6)).backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.randn(4, 6), torch.randn(5, 6))
    with pytest.raises(ValueError, match="K×6"):
        info_nce(torch.randn(4, 6), torch.randn(4, 6), torch.randn(10, 5))


# ---- methods without negatives and self-distillation ----
from sslbook.losses import barlow_twins, dino, koleo, negative_cosine  # noqa: E402


def test_negative_cosine_matches_the_formula_and_stops_the_gradient():
    g = torch.Generator().manual_seed(3)
    p = torch.randn(5, 4, generator=g, requires_grad=True)
    z = torch.randn(5, 4, generator=g, requires_grad=True)
    ref = -torch.stack([p[i] @ z[i] / (p[i].norm() * z[i].norm()) for i in range(5)]).mean()
    loss = negative_cosine(p, z)
    assert torch.allclose(loss, ref, atol=1e-6)
    loss.backward()
    assert p.grad is not None and z.grad is None
    # BYOL's normalised MSE is 2 + 2 × this
    mse = (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1).mean()
    assert torch.allclose(mse, 2 + 2 * negative_cosine(p, z), atol=1e-5)


def _barlow_reference(z1, z2, lambd, mean):
    n, d = z1.shape
    a = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
    b = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            if i == j:
                total += (1 - c) ** 2
            else:
                total += (c**2) / (d - 1) if mean else lambd * c**2
    return total


def test_barlow_twins_matches_the_formula_both_reductions():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)
    assert torch.allclose(barlow_twins(z1, z2, lambd=0.1), _barlow_reference(z1, z2, 0.1, False), atol=1e-5)
    assert torch.allclose(barlow_twins(z1, z2, reduction="mean"), _barlow_reference(z1, z2, 0, True), atol=1e-5)


def test_barlow_twins_is_zero_for_identical_decorrelated_embeddings():
    # columns of a scaled Hadamard-like ±1 matrix: zero mean, unit variance, mutually uncorrelated
    h = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]])
    z = h[:, 1:]  # drop the constant column: 4 samples × 3 decorrelated dimensions
    assert barlow_twins(z, z, lambd=1.0) < 1e-4
    assert barlow_twins(z, -z, lambd=1.0) > 1.0  # anti-correlated views are penalised


def _dino_reference(student, teacher, center, ts, tt):
    total, pairs = 0.0, 0
    for iq, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == iq:
                continue
            for n in range(t.shape[0]):
                p_t = torch.softmax((t[n] - center) / tt, 0)
                p_s = torch.softmax(s[n] / ts, 0)
                total += -(p_t * torch.log(p_s)).sum() / t.shape[0]
            pairs += 1
    return total / pairs


def test_dino_matches_the_formula_and_gives_the_teacher_no_gradient():
    g = torch.Generator().manual_seed(5)
    student = [torch.randn(3, 6, generator=g, requires_grad=True) for _ in range(4)]  # 2 global + 2 local
    teacher = [torch.randn(3, 6, generator=g, requires_grad=True) for _ in range(2)]
    center = torch.randn(6, generator=g)
    loss = dino(student, teacher, center, 0.1, 0.04)
    assert torch.allclose(loss, _dino_reference(student, teacher, center, 0.1, 0.04), atol=1e-4)
    loss.backward()
    assert all(t.grad is None for t in teacher) and all(s.grad is not None for s in student)
    with pytest.raises(ValueError, match="temperatures"):
        dino(student, teacher, center, 0.0, 0.04)


def test_koleo_matches_the_formula_and_prefers_spread_features():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(6, 3, generator=g)
    xn = F.normalize(x, dim=1)
    ref = -torch.stack([torch.log(min((xn[i] - xn[j]).norm() for j in range(6) if j != i)) for i in range(6)]).mean()
    assert torch.allclose(koleo(x), ref, atol=1e-5)
    spread = torch.eye(3).repeat(1, 1)  # orthogonal: nearest neighbours far apart
    clumped = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.01, 0.0], [1.0, 0.0, 0.01]])
    assert koleo(spread) < koleo(clumped)

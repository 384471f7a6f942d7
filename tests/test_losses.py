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
    ref = torch.stack([
        -(qn[i] @ kn[i] / t - torch.logsumexp(torch.cat([(qn[i] @ kn[i]).view(1), nn_ @ qn[i]]) / t, 0))
        for i in range(4)
    ]).mean()
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

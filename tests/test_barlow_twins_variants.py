"""Barlow Twins' two reductions: the paper's sum with a fixed λ and the mean variant (λ = 1/(D − 1)).

They are one loss where 1/(D − 1) equals λ (D = 201 for λ = 5e-3) and differ where it does not, most at the
paper's width (D = 8192): chapter 8 shows the same table on random tensors.
"""

import pytest
import torch
import torch.nn.functional as F

from sslbook.losses import barlow_twins


def views(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g)
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g)
    return z1, z2.requires_grad_()


def test_mean_variant_equals_the_sum_where_one_over_d_minus_one_is_lambda():
    z1, z2 = views(64, 201)
    s = barlow_twins(z1, z2, lambd=5e-3)
    m = barlow_twins(z1, z2, reduction="mean")
    assert torch.allclose(s, m, rtol=1e-6, atol=1e-6)
    (gs,) = torch.autograd.grad(s, z2)
    (gm,) = torch.autograd.grad(m, z2)
    assert torch.allclose(gs, gm, rtol=1e-5, atol=1e-7)
    # and the mean variant is the sum with λ = 1/(D − 1) at any width
    z1, z2 = views(32, 50, seed=1)
    assert torch.allclose(barlow_twins(z1, z2, reduction="mean"), barlow_twins(z1, z2, lambd=1 / 49), atol=1e-6)


@pytest.mark.parametrize("d", [2048, 8192])
def test_mean_variant_differs_from_lambda_5e3_at_large_width(d):
    z1, z2 = views(128, d)
    s = barlow_twins(z1, z2, lambd=5e-3)
    m = barlow_twins(z1, z2, reduction="mean")
    c = F.normalize(z1 - z1.mean(0), dim=0).T @ F.normalize(z2.detach() - z2.detach().mean(0), dim=0)
    inv = (1 - c.diagonal()).pow(2).sum()
    red = c.pow(2).sum() - c.diagonal().pow(2).sum()
    # the redundancy terms differ by the ratio of the weights, λ (D − 1) ≈ 10 at D = 2048 and 41 at 8192
    ratio = (s - inv) / (m - inv)
    assert ratio.item() == pytest.approx(5e-3 * (d - 1), rel=1e-3)
    assert (s - m).item() > 0.5 * s.item()  # not the same loss: over half of it differs
    assert (5e-3 * red / (inv + 5e-3 * red)).item() > 2 * (red / (d - 1) / (inv + red / (d - 1))).item()
    (gs,) = torch.autograd.grad(s, z2)
    (gm,) = torch.autograd.grad(m, z2)
    assert F.cosine_similarity(gs.flatten(), gm.flatten(), dim=0).item() < 0.99  # a different descent direction

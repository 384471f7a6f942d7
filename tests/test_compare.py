"""Spread over seeds: the bootstrap of a test score, the BN-refreshed floor, Welch's test and `compare`."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from sslbook.data.base import DataInfo, TensorImageDataset
from sslbook.evaluation import bootstrap, evaluate, refresh_bn_statistics

# ---------------------------------------------------------------- bootstrap of a test-set score


def test_bootstrap_is_zero_for_all_correct_and_shrinks_with_more_test_items():
    assert bootstrap(torch.ones(50, dtype=torch.bool))["std"] == 0.0
    small = bootstrap(torch.arange(100) % 2 == 0, resamples=500, seed=1)
    large = bootstrap(torch.arange(2500) % 2 == 0, resamples=500, seed=1)
    assert small["mean"] == large["mean"] == 0.5
    # the binomial's sqrt(p (1 - p) / n): 0.05 and 0.01
    assert 0.04 < small["std"] < 0.06 and 0.008 < large["std"] < 0.012
    assert small["low"] < 0.5 < small["high"] and large["high"] - large["low"] < small["high"] - small["low"]
    assert bootstrap(torch.arange(100) % 2 == 0, resamples=500, seed=1) == small  # seeded
    with pytest.raises(ValueError):
        bootstrap([])


# ---------------------------------------------------------------- BN-refreshed floor


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.out_dim = 4

    def forward(self, x):
        return self.drop(self.bn(self.conv(x)).mean((2, 3)))


def _images(n=40, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorImageDataset(
        torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
        torch.arange(n) % 2,
        DataInfo("noise", ["a", "b"], size),
    )


def test_refresh_bn_statistics_is_the_cumulative_mean_of_the_batches_and_changes_no_parameter():
    torch.manual_seed(0)
    net = _Net()
    params = {k: v.clone() for k, v in net.named_parameters()}
    data = _images(40)
    out = refresh_bn_statistics(net, data, batch_size=16)  # batches of 16, 16, 8
    assert out is net and not net.training and all(not m.training for m in net.modules())
    assert all(torch.equal(v, params[k]) for k, v in net.named_parameters())
    assert net.bn.momentum == 0.1  # restored
    means, variances = [], []
    with torch.no_grad():
        for start in range(0, 40, 16):
            z = net.conv(data.images[start : start + 16].float() / 255)
            means.append(z.mean((0, 2, 3)))
            variances.append(z.var((0, 2, 3), unbiased=True))
    assert torch.allclose(net.bn.running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert torch.allclose(net.bn.running_var, torch.stack(variances).mean(0), atol=1e-5)
    # a second refresh starts again from a reset: the same statistics
    before = net.bn.running_mean.clone()
    refresh_bn_statistics(net, data, batch_size=16)
    assert torch.allclose(net.bn.running_mean, before)


def test_refresh_bn_statistics_leaves_a_backbone_without_batchnorm_unchanged_and_says_so():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4), nn.LayerNorm(4))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(UserWarning, match="no BatchNorm"):
        assert refresh_bn_statistics(net, _images(8)) is net
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_evaluate_adds_bootstrap_noise_only_when_asked():
    torch.manual_seed(0)
    net, train, test = _Net(), _images(40, seed=1), _images(30, seed=2)
    plain = evaluate(net, train, test, linear_epochs=2, k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        boot = evaluate(net, train, test, linear_epochs=2, k=5, bootstrap=200)
    assert set(plain) == {"knn_top1", "linear_top1"}
    assert {k: boot[k] for k in plain} == plain
    for name in plain:
        assert boot[f"{name}_boot_std"] >= 0 and boot[f"{name}_low"] <= boot[name] <= boot[f"{name}_high"]

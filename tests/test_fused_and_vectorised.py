"""Speed contracts that can be checked without a clock: the losses are vectorised (the number of tensor
operations does not grow with the batch), the momentum update is one fused operation over the whole
parameter list, and MAE's encoder cost scales with the visible tokens (counted in FLOPs)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sslbook import losses
from sslbook.models.ema import ema_update_, momentum_copy


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations dispatched inside the context (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _count(fn):
    with OpCounter() as c:
        out = fn()
        out.backward()
    return len(c.ops)


def _inputs(n, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, requires_grad=True) for _ in range(3)]


LOSSES = {
    "nt_xent": lambda n: (lambda a, b, _: losses.nt_xent(a, b, 0.5))(*_inputs(n)),
    "info_nce (batch negatives)": lambda n: (lambda a, b, _: losses.info_nce(a, b, None, 0.2))(*_inputs(n)),
    "info_nce (queue)": lambda n: (lambda a, b, c: losses.info_nce(a, b, torch.randn(64, 8), 0.2))(*_inputs(n)),
    "negative_cosine": lambda n: (lambda a, b, _: losses.negative_cosine(a, b))(*_inputs(n)),
    "barlow_twins": lambda n: (lambda a, b, _: losses.barlow_twins(a, b, 5e-3))(*_inputs(n)),
    "koleo": lambda n: (lambda a, b, _: losses.koleo(a))(*_inputs(n)),
    "dino": lambda n: (lambda a, b, c: losses.dino([a, b, c], [a, b], torch.zeros(8)))(*_inputs(n)),
    "masked_mse": lambda n: losses.masked_mse(
        torch.randn(n, 4, 12, requires_grad=True), torch.randn(n, 4, 12), (torch.arange(n * 4).view(n, 4) % 2).float()
    ),
    "cpc_infonce": lambda n: losses.cpc_infonce(
        torch.randn(n, 4, 3, 8, requires_grad=True), [torch.randn(n, 3, 3, 8), torch.randn(n, 2, 3, 8)], (1, 2)
    ),
    "pretext_cross_entropy": lambda n: losses.pretext_cross_entropy(
        torch.randn(n, 4, requires_grad=True), torch.arange(n) % 4
    ),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_are_vectorised_over_the_batch(name):
    """No Python loop over the batch: the same operations for 4 images as for 64."""
    make = LOSSES[name]
    small, large = _count(lambda: make(4)), _count(lambda: make(64))
    assert small == large, (name, small, large)
    assert small > 0


def test_the_op_counter_sees_a_python_loop_over_the_batch():
    """The control: a loss written with a loop over the batch fails the test above."""

    def looped(n):
        a, b, _ = _inputs(n)
        return torch.stack([-F.cosine_similarity(a[i], b[i], dim=0) for i in range(n)]).mean()

    assert _count(lambda: looped(4)) < _count(lambda: looped(64))


def _net(layers):
    return nn.Sequential(*[nn.Linear(6, 6) for _ in range(layers)])


def test_momentum_update_is_one_fused_operation_over_the_parameter_list():
    for layers in (1, 5):
        online = _net(layers)
        target = momentum_copy(online)
        with torch.no_grad():
            for p in online.parameters():
                p.add_(1.0)
        before = [p.clone() for p in target.parameters()]
        with OpCounter() as c:
            ema_update_(target, online, 0.9)
        ops = [op for op in c.ops if not op.startswith("aten.detach")]
        assert ops == ["aten._foreach_lerp_.Scalar"], ops  # one op for 2 or 10 parameter tensors
        for b, t, o in zip(before, target.parameters(), online.parameters()):
            assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-6)


def test_every_momentum_method_updates_through_the_fused_op(monkeypatch):
    """MoCo v1/v2/v3, BYOL and DINO call ema_update_ (not a loop of their own) after every step."""
    from sslbook.data.base import DataInfo
    from sslbook.methods import get_method
    from sslbook.models import build_backbone, ema

    calls = []
    real = torch._foreach_lerp_

    def spy(tensors, others, weight):
        calls.append(len(tensors))
        return real(tensors, others, weight)

    monkeypatch.setattr(torch, "_foreach_lerp_", spy)
    info = DataInfo("t", ["a", "b"], 32, (0.5,) * 3, (0.25,) * 3)
    kwargs = {
        "moco_v1": dict(queue_size=16),
        "moco_v2": dict(queue_size=16, mlp_hidden=16),
        "moco_v3": dict(mlp_hidden=16, dim=8),
        "byol": dict(proj_dim=8, hidden_dim=16),
        "dino": dict(out_dim=16, hidden_dim=16, bottleneck_dim=8, local_size=16),
    }
    for name, kw in kwargs.items():
        backbone = "vit_tiny" if name == "dino" else "convnet_small"
        m = get_method(name)(build_backbone(backbone, info), info, 32, **kw)
        calls.clear()
        m.on_step_end(0, 10)
        n_params = sum(1 for p in m.parameters() if not p.requires_grad)  # the momentum copies
        assert calls and sum(calls) == n_params, (name, calls, n_params)
        assert len(calls) <= 3, (name, calls)  # one call per momentum network, not one per tensor
    assert ema.ema_update_ is ema_update_


# ---------------------------------------------------------------- MAE's encoder cost


def _encoder_flops(vit, x, ids_keep):
    with FlopCounterMode(display=False) as counter:
        vit.forward_tokens(x, ids_keep=ids_keep).sum().backward()
    return counter.get_total_flops()


def test_mae_encoder_cost_scales_with_the_visible_patches():
    """At 75% masking the encoder costs well under half of the unmasked encoder, at the same
    batch. Counted in FLOPs of a forward + backward pass (a clock on a shared CPU is too noisy)."""
    from sslbook.data.base import DataInfo
    from sslbook.methods.mae import random_masking
    from sslbook.models import build_backbone

    info = DataInfo("t", ["a"], 32, (0.5,) * 3, (0.25,) * 3)
    torch.manual_seed(0)
    for name in ("vit_tiny", "vit_tiny_p4"):  # 16 and 64 patches
        vit = build_backbone(name, info)
        L = (32 // vit.patch_size) ** 2
        x = torch.rand(2, 3, 32, 32)
        full = _encoder_flops(vit, x, None)
        flops = {r: _encoder_flops(vit, x, random_masking(2, L, r)[0]) for r in (0.5, 0.75, 0.9)}
        assert flops[0.75] < 0.4 * full, (name, flops[0.75] / full)  # "well under half"
        assert flops[0.9] < flops[0.75] < flops[0.5] < full
    # the mask-token-in-encoder ablation gets no saving: every position goes through the encoder
    mask = random_masking(2, L, 0.75)[2]
    with FlopCounterMode(display=False) as counter:
        vit.forward_tokens(x, mask=mask, mask_token=torch.zeros(1, 1, vit.out_dim)).sum().backward()
    assert counter.get_total_flops() == pytest.approx(full, rel=0.01)


def test_mae_encoder_benchmark_reports_every_ratio():
    from sslbook.benchmarks import mae_encoder

    res = mae_encoder("vit_tiny", batch_size=4, ratios=(0.0, 0.75), steps=1, warmup=0, verbose=False)
    assert res["tokens"] == {0.0: 16, 0.75: 4} and res["relative"][0.0] == 1.0
    assert res["seconds"][0.75] > 0 and res["cpu_seconds"][0.0] > 0 and "CPU" in res["hardware"]

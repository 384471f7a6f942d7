"""Full-scale speed machinery: the device data path, torch.compile, LARS on foreach ops, the bench command
and the peer comparison (CI-sized: tiny backbone, batch and step counts on the CPU; no speed is asserted)."""
import torch

from sslbook.optim import LARS


@torch.no_grad()
def _reference_lars_step(opt):
    """The per-parameter LARS formula (the loop LARS.step replaced), one parameter at a time."""
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
            if not group["lars_exclude"]:
                w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                trust = torch.where((w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm, torch.ones_like(w_norm))
                d.mul_(trust)
            buf = opt.state[p].get("momentum_buffer")
            if buf is None:
                buf = opt.state[p]["momentum_buffer"] = d
            else:
                buf.mul_(group["momentum"]).add_(d)
            p.add_(buf, alpha=-group["lr"])


def test_lars_foreach_step_equals_the_per_parameter_formula():
    g = torch.Generator().manual_seed(0)
    shapes = [(16, 8), (8, 3, 3, 3), (5,), (7, 4)]

    def make():
        params = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
        params[3].data.zero_()  # ‖w‖ = 0: the trust ratio falls back to 1
        return params

    a = make()
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    unused = torch.nn.Parameter(torch.randn(3, generator=g))  # never gets a gradient: left alone

    def groups(ps, extra):
        return [dict(params=[ps[0], ps[1], ps[3]], weight_decay=1e-2, lars_exclude=False),
                dict(params=[ps[2], extra], weight_decay=0.0, lars_exclude=True)]

    opt_a = LARS(groups(a, unused), lr=0.3, momentum=0.9)
    ref_unused = torch.nn.Parameter(unused.detach().clone())
    opt_b = LARS(groups(b, ref_unused), lr=0.3, momentum=0.9)
    for _ in range(3):
        grads = [torch.randn(*s, generator=g) for s in shapes]
        for p, q, gr in zip(a, b, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt_a.step()
        _reference_lars_step(opt_b)
    for p, q in zip(a, b):
        assert not torch.equal(p, torch.zeros_like(p))
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(opt_a.state[p]["momentum_buffer"], opt_b.state[q]["momentum_buffer"], rtol=1e-6, atol=1e-7)
    assert torch.equal(unused, ref_unused) and unused not in opt_a.state
    assert a[3].abs().sum() > 0  # the zero weight moved by a plain (trust 1) step

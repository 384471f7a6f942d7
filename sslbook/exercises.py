"""Checkers for the chapters' exercises.

Each checker calls the reader's function on random inputs, compares it with sslbook's own
implementation and prints what it found. It returns True when the answers match. A function that
still raises ``NotImplementedError`` gets a hint instead of a traceback, so a chapter runs from top
to bottom before the exercises are solved.

    >>> from sslbook.exercises import check_knn_classify
    >>> check_knn_classify(my_knn)
"""
from __future__ import annotations

import torch


def _report(name: str, ok: bool, detail: str = "") -> bool:
    print(f"{'✓' if ok else '✗'} {name}: {'correct' if ok else 'not yet'}{' — ' + detail if detail else ''}")
    return ok


def _call(name: str, fn, *args, **kwargs):
    try:
        return True, fn(*args, **kwargs)
    except NotImplementedError:
        _report(name, False, "not implemented yet: replace the `raise NotImplementedError` with your code")
        return False, None


def check_knn_classify(fn, trials: int = 5) -> bool:
    """Exercise 1.1: ``fn(train_feats, train_labels, test_feats, k, temperature) -> labels`` must
    match the weighted-vote kNN of :func:`sslbook.evaluation.knn_classify`."""
    from sslbook.evaluation import knn_classify

    g = torch.Generator().manual_seed(0)
    for t in range(trials):
        n, m, d, c = 60, 25, 8, 4
        train = torch.randn(n, d, generator=g)
        labels = torch.randint(0, c, (n,), generator=g)
        test = torch.randn(m, d, generator=g)
        k, temp = [1, 5, 20, 7, 60][t], [0.07, 0.5, 0.1, 1.0, 0.2][t]
        ok, got = _call("weighted kNN", fn, train, labels, test, k, temp)
        if not ok:
            return False
        want = knn_classify(train, labels, test, k=k, temperature=temp, num_classes=c)
        got = torch.as_tensor(got).long().flatten()
        if got.shape != want.shape or not torch.equal(got, want):
            wrong = int((got != want).sum()) if got.shape == want.shape else "all"
            return _report("weighted kNN", False, f"k={k}, temperature={temp}: {wrong} of {m} predictions differ")
    return _report("weighted kNN", True, f"{trials} random cases agree with sslbook.evaluation.knn_classify")


def check_cosine_schedule(fn) -> bool:
    """Exercise 1.2: ``fn(base, final, total_steps, warmup_steps) -> 1-D tensor`` of learning rates
    must match :func:`sslbook.schedules.cosine_schedule` (linear warm-up from 0, then a cosine)."""
    from sslbook.schedules import cosine_schedule

    for args in [(0.1, 0.0, 100, 10), (1.0, 0.01, 37, 0), (0.5, 0.0, 20, 5)]:
        ok, got = _call("cosine schedule", fn, *args)
        if not ok:
            return False
        want = cosine_schedule(*args)
        got = torch.as_tensor(got, dtype=torch.float64).flatten()
        if got.shape != want.shape:
            return _report("cosine schedule", False, f"for {args} expected {len(want)} values, got {len(got)}")
        if not torch.allclose(got, want, atol=1e-6):
            i = int((got - want).abs().argmax())
            return _report("cosine schedule", False, f"for {args}, step {i}: expected {float(want[i]):.6f}, got {float(got[i]):.6f}")
    return _report("cosine schedule", True, "matches sslbook.schedules.cosine_schedule")


def check_enqueue(fn) -> bool:
    """Exercise 6.1: ``fn(queue K×D, ptr int, keys B×D) -> (queue, ptr)``: MoCo's FIFO queue. The B new
    keys replace the B oldest ones (slots ptr … ptr+B−1) and the pointer moves on by B, modulo K."""
    import torch.nn.functional as F

    from sslbook.methods.momentum import KeyQueue

    g = torch.Generator().manual_seed(0)
    for size, b, steps in [(8, 2, 5), (12, 4, 4), (6, 6, 2)]:
        ref = KeyQueue(size, 3)
        queue, ptr = ref.keys.clone(), 0
        for s in range(steps):
            keys = F.normalize(torch.randn(b, 3, generator=g), dim=1)
            ok, got = _call("FIFO queue", fn, queue.clone(), ptr, keys)
            if not ok:
                return False
            ref.enqueue(keys)
            try:
                queue, ptr = torch.as_tensor(got[0]), int(got[1])
            except (TypeError, IndexError, ValueError):
                return _report("FIFO queue", False, "return a pair (queue, ptr)")
            if ptr != int(ref.ptr):
                return _report("FIFO queue", False, f"K={size}, B={b}, after {s + 1} batches: ptr should be {int(ref.ptr)}, got {ptr}")
            if queue.shape != ref.keys.shape or not torch.allclose(queue, ref.keys, atol=1e-6):
                return _report("FIFO queue", False, f"K={size}, B={b}, after {s + 1} batches the queue's contents differ")
    return _report("FIFO queue", True, "the newest keys replace the oldest, the pointer wraps around")


def check_momentum_update(fn) -> bool:
    """Exercise 6.2: ``fn(target_params, online_params, m)`` updates the target parameters in place,
    θk ← m·θk + (1 − m)·θq, as :func:`sslbook.methods.momentum.momentum_update_` does."""
    from torch import nn

    from sslbook.methods.momentum import momentum_update_

    for m in (0.0, 0.9, 0.999, 1.0):
        torch.manual_seed(1)
        online, target = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2)), nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2))
        want = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2))
        want.load_state_dict(target.state_dict())
        momentum_update_(want, online, m)
        with torch.no_grad():
            ok, _ = _call("momentum update", fn, list(target.parameters()), [p.detach() for p in online.parameters()], m)
        if not ok:
            return False
        for a, b in zip(target.parameters(), want.parameters()):
            if not torch.allclose(a, b, atol=1e-6):
                return _report("momentum update", False, f"m={m}: the target parameters differ from m·θk + (1 − m)·θq "
                               "(update them in place)")
    return _report("momentum update", True, "θk ← m θk + (1 − m) θq for m = 0, 0.9, 0.999, 1")


def check_cosine_momentum(fn) -> bool:
    """Exercise 6.3: ``fn(step, total_steps, base) -> float``: MoCo v3's (and BYOL's) momentum schedule,
    from ``base`` at step 0 up to 1 at the last step, along a half cosine."""
    from sslbook.methods.momentum import cosine_momentum

    for args in [(0, 100, 0.99), (25, 100, 0.99), (50, 100, 0.996), (100, 100, 0.9), (7, 13, 0.5)]:
        ok, got = _call("momentum schedule", fn, *args)
        if not ok:
            return False
        want = cosine_momentum(*args)
        if abs(float(got) - want) > 1e-6:
            return _report("momentum schedule", False, f"step {args[0]} of {args[1]}, base {args[2]}: expected {want:.6f}, got {float(got):.6f}")
    return _report("momentum schedule", True, "matches sslbook.methods.momentum.cosine_momentum")

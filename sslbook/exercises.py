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


def check_nt_xent(fn, trials: int = 4) -> bool:
    """Exercise 5.1: ``fn(z1, z2, temperature) -> scalar`` must match :func:`sslbook.losses.nt_xent`
    (SimCLR's loss over the 2N views, positives = the twin view) on random N×D inputs."""
    from sslbook.losses import nt_xent

    g = torch.Generator().manual_seed(0)
    for n, d, t in [(4, 8, 0.5), (16, 3, 0.1), (1, 5, 1.0), (9, 32, 0.07)][:trials]:
        z1, z2 = torch.randn(n, d, generator=g) * 3, torch.randn(n, d, generator=g)
        ok, got = _call("NT-Xent", fn, z1, z2, t)
        if not ok:
            return False
        want = nt_xent(z1, z2, t)
        got = torch.as_tensor(got, dtype=torch.float32)
        if got.numel() != 1:
            return _report("NT-Xent", False, f"expected a scalar, got shape {tuple(got.shape)} (average over the 2N views)")
        if not torch.allclose(got.reshape(()), want, atol=1e-4):
            return _report("NT-Xent", False, f"N={n}, D={d}, τ={t}: expected {float(want):.5f}, got {float(got):.5f}")
    return _report("NT-Xent", True, "matches sslbook.losses.nt_xent")


def check_mi_lower_bound(fn) -> bool:
    """Exercise 5.2: ``fn(scores) -> log N − InfoNCE`` for an N×N score matrix whose positives are
    on the diagonal (the estimate of chapter 5's mutual-information bound)."""
    import math

    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    cases = [torch.zeros(8, 8), 30 * torch.eye(5), torch.randn(16, 16, generator=g) * 2, torch.randn(3, 3, generator=g)]
    for scores in cases:
        ok, got = _call("InfoNCE bound", fn, scores.clone())
        if not ok:
            return False
        n = scores.shape[0]
        want = math.log(n) - float(F.cross_entropy(scores, torch.arange(n)))
        got = float(torch.as_tensor(got))
        if not math.isfinite(got) or abs(got - want) > 1e-4:
            return _report("InfoNCE bound", False, f"N={n}: expected {want:.5f}, got {got:.5f}")
    return _report("InfoNCE bound", True, "log N − L agrees on uninformative, perfect and random scores")

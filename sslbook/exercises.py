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


# ----------------------------------------------------------------------------------------------
# Chapter 3: reconstruction and colour
# ----------------------------------------------------------------------------------------------


def check_rgb_to_lab(fn) -> bool:
    """Exercise 3.1: ``fn(rgb N×3×H×W in [0, 1]) -> Lab N×3×H×W`` must match :func:`sslbook.color.rgb_to_lab`."""
    from sslbook.color import rgb_to_lab

    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.rand(3, 3, 5, 5, generator=g), torch.ones(1, 3, 5, 5), torch.zeros(1, 3, 5, 5)])
    ok, got = _call("rgb → Lab", fn, x.clone())
    if not ok:
        return False
    want = rgb_to_lab(x)
    got = torch.as_tensor(got, dtype=torch.float32)
    if got.shape != want.shape:
        return _report("rgb → Lab", False, f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    err = (got - want).abs().amax(dim=(0, 2, 3))
    if (err > 0.05).any():
        worst = "Lab"[int(err.argmax())]
        return _report("rgb → Lab", False, f"channel {worst} is off by up to {float(err.max()):.3f} (white should be L=100, a=b=0)")
    return _report("rgb → Lab", True, "matches sslbook.color.rgb_to_lab to 0.05")


def check_masked_mse(fn) -> bool:
    """Exercise 3.2: ``fn(pred, target, mask) -> scalar``: the mean squared error over masked pixels only."""
    from sslbook.losses import masked_mse

    g = torch.Generator().manual_seed(4)
    for trial in range(3):
        pred, target = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
        mask = (torch.rand(2, 1, 8, 8, generator=g) < [0.25, 0.5, 0.9][trial]).float()
        ok, got = _call("masked MSE", fn, pred, target, mask)
        if not ok:
            return False
        want = masked_mse(pred, target, mask)
        if not torch.allclose(torch.as_tensor(got, dtype=torch.float32).reshape(()), want, atol=1e-5):
            return _report("masked MSE", False, f"expected {float(want):.5f}, got {float(torch.as_tensor(got).reshape(())):.5f} "
                           "(average over masked pixels and channels only)")
    return _report("masked MSE", True, "matches sslbook.losses.masked_mse")


def check_copy_colours(fn) -> bool:
    """Exercise 3.3: ``fn(f_ref N×C×M, f_tgt N×C×P, c_ref N×K×M) -> N×K×P``: y_j = Σ_i softmax_i(f_iᵀf_j) c_i."""
    from sslbook.losses import copy_colours

    g = torch.Generator().manual_seed(5)
    f_ref, f_tgt, c = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 5, generator=g), torch.rand(2, 3, 6, generator=g)
    ok, got = _call("colour pointer", fn, f_ref, f_tgt, c)
    if not ok:
        return False
    want = copy_colours(f_ref, f_tgt, c)
    got = torch.as_tensor(got, dtype=torch.float32)
    if got.shape != want.shape:
        return _report("colour pointer", False, f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got, want, atol=1e-5):
        hint = " (is the softmax over the reference locations i, dim 1 of A?)"
        return _report("colour pointer", False, f"values differ by up to {float((got - want).abs().max()):.4f}{hint}")
    return _report("colour pointer", True, "matches sslbook.losses.copy_colours")

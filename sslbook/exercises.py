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


def check_rotate_batch(fn) -> bool:
    """Exercise 2.1: ``fn(x) -> (rotated, targets)`` must rotate every image of x (N×3×H×W) by 0°, 90°,
    180° and 270° counter-clockwise, grouped by angle, with targets 0…3, as
    :func:`sslbook.methods.rotnet.rotate_batch` does."""
    from sslbook.methods.rotnet import rotate_batch

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 6, 6, generator=g)
    ok, got = _call("rotate batch", fn, x)
    if not ok:
        return False
    want_x, want_t = rotate_batch(x)
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return _report("rotate batch", False, "return a pair (rotated images, targets)")
    gx, gt = torch.as_tensor(got[0]), torch.as_tensor(got[1]).long().flatten()
    if gx.shape != want_x.shape:
        return _report("rotate batch", False, f"expected images of shape {tuple(want_x.shape)}, got {tuple(gx.shape)}")
    if not torch.equal(gt, want_t):
        return _report("rotate batch", False, f"expected targets {want_t.tolist()}, got {gt.tolist()}")
    for k in range(4):
        if not torch.allclose(gx[k * 3:(k + 1) * 3], want_x[k * 3:(k + 1) * 3]):
            return _report("rotate batch", False, f"the images rotated by {90 * k}° differ (counter-clockwise, torch.rot90 on dims (2, 3))")
    return _report("rotate batch", True, "matches sslbook.methods.rotnet.rotate_batch")


def check_neighbour_label(fn) -> bool:
    """Exercise 2.2: ``fn(d_row, d_col) -> label`` must give the relative-position class (0…7) of a
    neighbour d_row rows and d_col columns away from the centre cell, in reading order (up-left = 0,
    up = 1, up-right = 2, left = 3, right = 4, down-left = 5, down = 6, down-right = 7)."""
    from sslbook.methods.relative_position import OFFSETS

    for label, (dr, dc) in enumerate(OFFSETS):
        ok, got = _call("neighbour label", fn, dr, dc)
        if not ok:
            return False
        if int(got) != label:
            return _report("neighbour label", False, f"offset (row {dr:+d}, col {dc:+d}) is class {label}, got {got}")
    return _report("neighbour label", True, "all eight offsets give the right class")


def check_min_hamming(fn) -> bool:
    """Exercise 2.3: ``fn(perms) -> int``: the smallest Hamming distance between two different rows of
    a P×T tensor of permutations (the quantity the jigsaw permutation set maximises)."""
    from sslbook.methods.jigsaw import hamming_distances, permutation_set

    cases = [permutation_set(10), permutation_set(30), torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0]])]
    for perms in cases:
        ok, got = _call("minimum Hamming distance", fn, perms.clone())
        if not ok:
            return False
        d = hamming_distances(perms, perms)
        d.fill_diagonal_(perms.shape[1] + 1)
        want = int(d.min())
        if int(got) != want:
            return _report("minimum Hamming distance", False, f"for a set of {len(perms)} permutations expected {want}, got {got}")
    return _report("minimum Hamming distance", True, "agrees on three permutation sets")

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


def _scalar_matches(name: str, got, want: torch.Tensor, where: str, hint: str = "") -> bool:
    """True if ``got`` is one number within 1e-4 of ``want``; else prints what is wrong (``where``: the case)."""
    got = torch.as_tensor(got, dtype=torch.float32)
    if got.numel() != 1:
        return _report(name, False, f"expected a scalar, got shape {tuple(got.shape)}{hint}")
    if not torch.allclose(got.reshape(()), want, atol=1e-4):
        return _report(name, False, f"{where}: expected {float(want):.5f}, got {float(got):.5f}")
    return True


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
            return _report(
                "cosine schedule",
                False,
                f"for {args}, step {i}: expected {float(want[i]):.6f}, got {float(got[i]):.6f}",
            )
    return _report("cosine schedule", True, "matches sslbook.schedules.cosine_schedule")


def check_random_masking(fn, trials: int = 5) -> bool:
    """Exercise 4.1: ``fn(n, num_patches, mask_ratio) -> (ids_keep N×keep, ids_restore N×L, mask N×L)``
    must keep exactly ``int(L·(1 − ratio))`` distinct patches per image, mark exactly the others as
    masked (1), and ``ids_restore`` must undo the shuffle [visible; masked]."""
    name = "random masking"
    for n, L, ratio in [(4, 64, 0.75), (3, 16, 0.5), (2, 49, 0.9), (5, 64, 0.25), (1, 196, 0.75)][:trials]:
        ok, got = _call(name, fn, n, L, ratio)
        if not ok:
            return False
        ids_keep, ids_restore, mask = (torch.as_tensor(t) for t in got)
        keep = int(L * (1 - ratio))
        if tuple(ids_keep.shape) != (n, keep):
            return _report(
                name, False, f"L={L}, ratio={ratio}: ids_keep should be {n}×{keep}, got {tuple(ids_keep.shape)}"
            )
        if tuple(mask.shape) != (n, L) or tuple(ids_restore.shape) != (n, L):
            return _report(name, False, f"mask and ids_restore should be {n}×{L}")
        for i in range(n):
            kept = ids_keep[i].long().tolist()
            if len(set(kept)) != keep:
                return _report(name, False, "a patch is kept twice")
            visible = (mask[i] == 0).nonzero().flatten().tolist()
            if sorted(kept) != sorted(visible) or int((mask[i] == 1).sum()) != L - keep:
                return _report(name, False, "the mask (1 = masked) does not match the kept patches")
            # ids_restore is the inverse of the shuffle whose first `keep` entries are ids_keep, in order:
            # gathering [visible tokens; mask tokens] with it puts every token back at its patch
            restore = ids_restore[i].long()
            if sorted(restore.tolist()) != list(range(L)):
                return _report(name, False, "ids_restore is not a permutation of 0..L-1")
            if restore.argsort()[:keep].tolist() != kept:
                return _report(name, False, "ids_restore does not undo the shuffle that starts with ids_keep")
    return _report(name, True, "exact counts, consistent mask and restore order")


def check_masked_mse(fn) -> bool:
    """Exercise 4.2: ``fn(pred, target, mask)`` (N×L×P, N×L×P, N×L with 1 = masked) must equal the
    mean over masked patches of the per-patch MSE, and ignore the visible patches entirely."""
    from sslbook.losses import masked_mse

    name = "masked MSE"
    g = torch.Generator().manual_seed(0)
    for n, L, P in [(2, 16, 12), (3, 64, 48)]:
        pred, target = torch.randn(n, L, P, generator=g), torch.randn(n, L, P, generator=g)
        mask = (torch.rand(n, L, generator=g) < 0.75).float()
        ok, got = _call(name, fn, pred, target, mask)
        if not ok:
            return False
        want = masked_mse(pred, target, mask)
        if not torch.allclose(torch.as_tensor(got, dtype=torch.float32), want, atol=1e-5):
            return _report(name, False, f"expected {float(want):.5f}, got {float(got):.5f}")
        spoiled = pred + 1000 * (1 - mask)[..., None]  # change only the visible patches
        ok, got2 = _call(name, fn, spoiled, target, mask)
        if not torch.allclose(torch.as_tensor(got2, dtype=torch.float32), want, atol=1e-5):
            return _report(name, False, "the loss changes when only visible patches change: it must ignore them")
    return _report(name, True, "matches sslbook.losses.masked_mse and ignores visible patches")


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
        if not torch.allclose(gx[k * 3 : (k + 1) * 3], want_x[k * 3 : (k + 1) * 3]):
            return _report(
                "rotate batch",
                False,
                f"the images rotated by {90 * k}° differ (counter-clockwise, torch.rot90 on dims (2, 3))",
            )
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
            return _report(
                "minimum Hamming distance", False, f"for a set of {len(perms)} permutations expected {want}, got {got}"
            )
    return _report("minimum Hamming distance", True, "agrees on three permutation sets")


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
        return _report(
            "rgb → Lab", False, f"channel {worst} is off by up to {float(err.max()):.3f} (white should be L=100, a=b=0)"
        )
    return _report("rgb → Lab", True, "matches sslbook.color.rgb_to_lab to 0.05")


def check_masked_pixel_mse(fn) -> bool:
    """Exercise 3.2: ``fn(pred, target, mask) -> scalar``: the mean squared error over masked pixels only."""
    from sslbook.losses import masked_pixel_mse

    g = torch.Generator().manual_seed(4)
    for trial in range(3):
        pred, target = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
        mask = (torch.rand(2, 1, 8, 8, generator=g) < [0.25, 0.5, 0.9][trial]).float()
        ok, got = _call("masked MSE", fn, pred, target, mask)
        if not ok:
            return False
        want = masked_pixel_mse(pred, target, mask)
        if not torch.allclose(torch.as_tensor(got, dtype=torch.float32).reshape(()), want, atol=1e-5):
            return _report(
                "masked MSE",
                False,
                f"expected {float(want):.5f}, got {float(torch.as_tensor(got).reshape(())):.5f} "
                "(average over masked pixels and channels only)",
            )
    return _report("masked MSE", True, "matches sslbook.losses.masked_pixel_mse")


def check_copy_colours(fn) -> bool:
    """Exercise 3.3: ``fn(f_ref N×C×M, f_tgt N×C×P, c_ref N×K×M) -> N×K×P``: y_j = Σ_i softmax_i(f_iᵀf_j) c_i."""
    from sslbook.losses import copy_colours

    g = torch.Generator().manual_seed(5)
    f_ref, f_tgt, c = (
        torch.randn(2, 4, 6, generator=g),
        torch.randn(2, 4, 5, generator=g),
        torch.rand(2, 3, 6, generator=g),
    )
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
        if not _scalar_matches(
            "NT-Xent", got, nt_xent(z1, z2, t), f"N={n}, D={d}, τ={t}", " (average over the 2N views)"
        ):
            return False
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


def check_cpc_infonce(fn, trials: int = 3) -> bool:
    """Exercise 7.1: ``fn(z, preds, steps, temperature) -> scalar`` must match
    :func:`sslbook.losses.cpc_infonce` (dot-product scores): z N×T×W×D, preds[s] N×(T−k)×W×D for the
    k = steps[s] rows ahead; every encoding of the batch is a candidate; the mean over positions, then over k."""
    from sslbook.losses import cpc_infonce

    g = torch.Generator().manual_seed(0)
    for n, t, w, d, steps, tau in [(3, 4, 3, 8, (1, 2), 1.0), (2, 5, 2, 4, (2, 3), 0.5), (4, 3, 1, 6, (1,), 0.2)][
        :trials
    ]:
        z = torch.randn(n, t, w, d, generator=g)
        preds = [torch.randn(n, t - k, w, d, generator=g) for k in steps]
        ok, got = _call("CPC InfoNCE", fn, z.clone(), [p.clone() for p in preds], steps, tau)
        if not ok:
            return False
        if not _scalar_matches(
            "CPC InfoNCE", got, cpc_infonce(z, preds, steps, tau), f"N={n}, grid {t}×{w}, steps {steps}, τ={tau}"
        ):
            return False
    return _report("CPC InfoNCE", True, "matches sslbook.losses.cpc_infonce")


def check_causal_mask(fn) -> bool:
    """Exercise 7.2: ``fn(kernel_size) -> kernel_size×kernel_size`` 0/1 mask for a convolution whose
    output at row i may see input rows ≤ i only (the centre row and the rows above it, every column)."""
    for k in (3, 5, 1):
        ok, got = _call("causal mask", fn, k)
        if not ok:
            return False
        got = torch.as_tensor(got, dtype=torch.float32)
        want = torch.zeros(k, k)
        want[: k // 2 + 1] = 1
        if got.shape != want.shape or not torch.equal(got, want):
            return _report("causal mask", False, f"kernel {k}: expected\n{want.int()}\ngot\n{got}")
    return _report("causal mask", True, "rows below the centre are zero, the others one")


# ----------------------------------------------------------------------------------------------
# Chapter 6: memory banks and momentum encoders
# ----------------------------------------------------------------------------------------------


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
                return _report(
                    "FIFO queue",
                    False,
                    f"K={size}, B={b}, after {s + 1} batches: ptr should be {int(ref.ptr)}, got {ptr}",
                )
            if queue.shape != ref.keys.shape or not torch.allclose(queue, ref.keys, atol=1e-6):
                return _report(
                    "FIFO queue", False, f"K={size}, B={b}, after {s + 1} batches the queue's contents differ"
                )
    return _report("FIFO queue", True, "the newest keys replace the oldest, the pointer wraps around")


def check_momentum_update(fn) -> bool:
    """Exercise 6.2: ``fn(target_params, online_params, m)`` updates the target parameters in place,
    θk ← m·θk + (1 − m)·θq, as :func:`sslbook.models.ema.ema_update_` does."""
    from torch import nn

    from sslbook.models.ema import ema_update_

    for m in (0.0, 0.9, 0.999, 1.0):
        torch.manual_seed(1)
        online, target = (
            nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2)),
            nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2)),
        )
        want = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2))
        want.load_state_dict(target.state_dict())
        ema_update_(want, online, m)
        with torch.no_grad():
            ok, _ = _call(
                "momentum update", fn, list(target.parameters()), [p.detach() for p in online.parameters()], m
            )
        if not ok:
            return False
        for a, b in zip(target.parameters(), want.parameters()):
            if not torch.allclose(a, b, atol=1e-6):
                return _report(
                    "momentum update",
                    False,
                    f"m={m}: the target parameters differ from m·θk + (1 − m)·θq (update them in place)",
                )
    return _report("momentum update", True, "θk ← m θk + (1 − m) θq for m = 0, 0.9, 0.999, 1")


def check_cosine_momentum(fn) -> bool:
    """Exercise 6.3: ``fn(step, total_steps, base) -> float``: MoCo v3's (and BYOL's) momentum schedule,
    from ``base`` at step 0 up to 1 at the last step, along a half cosine."""
    from sslbook.schedules import cosine_momentum

    for args in [(0, 100, 0.99), (25, 100, 0.99), (50, 100, 0.996), (100, 100, 0.9), (7, 13, 0.5)]:
        ok, got = _call("momentum schedule", fn, *args)
        if not ok:
            return False
        want = cosine_momentum(*args)
        if abs(float(got) - want) > 1e-6:
            return _report(
                "momentum schedule",
                False,
                f"step {args[0]} of {args[1]}, base {args[2]}: expected {want:.6f}, got {float(got):.6f}",
            )
    return _report("momentum schedule", True, "matches sslbook.schedules.cosine_momentum")


# ----------------------------------------------------------------------------------------------
# Chapter 11: every method side by side
# ----------------------------------------------------------------------------------------------


def check_sharpen(fn) -> bool:
    """Exercise 10.1: ``fn(p, T) -> tensor``: MixMatch's sharpening of each row of ``p`` (N×C distributions),
    p_i^{1/T} / Σ_j p_j^{1/T}, as :func:`sslbook.losses.sharpen`."""
    from sslbook.losses import sharpen

    g = torch.Generator().manual_seed(0)
    for n, c, t in [(4, 5, 0.5), (3, 10, 1.0), (6, 3, 0.25), (2, 4, 2.0)]:
        p = torch.softmax(torch.randn(n, c, generator=g) * 2, dim=1)
        ok, got = _call("sharpening", fn, p.clone(), t)
        if not ok:
            return False
        want = sharpen(p, t)
        try:
            got = torch.as_tensor(got, dtype=torch.float32).reshape(n, c)
        except (RuntimeError, TypeError, ValueError):
            return _report("sharpening", False, f"return an N×C tensor ({n}×{c}), one distribution per row")
        if not torch.allclose(got, want, atol=1e-5):
            hint = (
                " (normalise each row to sum to 1)" if not torch.allclose(got.sum(1), torch.ones(n), atol=1e-4) else ""
            )
            return _report(
                "sharpening", False, f"T = {t}: expected {want[0, :3].tolist()}…, got {got[0, :3].tolist()}…{hint}"
            )
    return _report("sharpening", True, "p^(1/T), renormalised per row")


def check_mixmatch_mixup(fn, trials: int = 4) -> bool:
    """Exercise 10.2: ``fn(x, y, lam, perm) -> (x', y')``: MixMatch's MixUp of item i with item perm[i], with
    λ'_i = max(λ_i, 1 − λ_i) for the given Beta draws ``lam``, images and label distributions alike, as
    :func:`sslbook.augment.mixup` with :func:`sslbook.augment.mixup_lambda`'s weights."""
    from sslbook.augment import mixup

    g = torch.Generator().manual_seed(0)
    for _ in range(trials):
        n, c = 6, 4
        x, y = torch.rand(n, 3, 4, 4, generator=g), torch.softmax(torch.randn(n, c, generator=g), dim=1)
        lam = torch.rand(n, generator=g)  # some below 1/2: λ' = max(λ, 1 − λ) must be taken
        perm = torch.randperm(n, generator=g)
        ok, got = _call("MixMatch's MixUp", fn, x.clone(), y.clone(), lam.clone(), perm.clone())
        if not ok:
            return False
        want_x, want_y = mixup(x, y, torch.maximum(lam, 1 - lam), perm)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return _report("MixMatch's MixUp", False, "return the pair (mixed images, mixed labels)")
        gx, gy = (torch.as_tensor(t, dtype=torch.float32) for t in got)
        if gx.shape != want_x.shape or gy.shape != want_y.shape:
            return _report(
                "MixMatch's MixUp", False, f"shapes {tuple(gx.shape)}, {tuple(gy.shape)}: keep the inputs' shapes"
            )
        if not (torch.allclose(gx, want_x, atol=1e-5) and torch.allclose(gy, want_y, atol=1e-5)):
            plain, _ = mixup(x, y, lam, perm)
            hint = (
                " (use λ' = max(λ, 1 − λ), so that each item stays closer to itself)"
                if torch.allclose(gx, plain, atol=1e-5)
                else ""
            )
            return _report("MixMatch's MixUp", False, f"the mixed items differ from λ'·x_i + (1 − λ')·x_perm[i]{hint}")
    return _report("MixMatch's MixUp", True, "λ' = max(λ, 1 − λ); images and labels mixed with the same weights")


def check_label_guess(fn) -> bool:
    """Exercise 10.3: ``fn(probs, T) -> tensor``: MixMatch's guessed labels from the model's predictions on K
    augmentations of each unlabelled image (``probs``: K×N×C), the average over the K copies, sharpened."""
    from sslbook.losses import sharpen

    g = torch.Generator().manual_seed(0)
    for k, n, c, t in [(2, 5, 4, 0.5), (4, 3, 6, 0.5), (1, 4, 3, 0.25)]:
        probs = torch.softmax(torch.randn(k, n, c, generator=g) * 2, dim=-1)
        ok, got = _call("label guess", fn, probs.clone(), t)
        if not ok:
            return False
        want = sharpen(probs.mean(0), t)
        try:
            got = torch.as_tensor(got, dtype=torch.float32).reshape(n, c)
        except (RuntimeError, TypeError, ValueError):
            return _report("label guess", False, f"return one guess per image: an N×C tensor ({n}×{c})")
        if not torch.allclose(got, want, atol=1e-5):
            avg_of_sharp = sharpen(probs.reshape(k * n, c), t).reshape(k, n, c).mean(0)
            hint = " (average first, then sharpen)" if torch.allclose(got, avg_of_sharp, atol=1e-5) else ""
            return _report(
                "label guess", False, f"K = {k}, T = {t}: expected {want[0].tolist()}, got {got[0].tolist()}{hint}"
            )
    return _report("label guess", True, "the K predictions averaged, then sharpened")


def check_rank_correlation(fn, trials: int = 6) -> bool:
    """Exercise 11.1: ``fn(x, y) -> float``: Spearman's rank correlation of two lists, ties given
    their average rank, as :func:`sslbook.evaluation.rank_correlation`."""
    from sslbook.evaluation import rank_correlation

    g = torch.Generator().manual_seed(0)
    cases = [
        ([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]),
        ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]),
        ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 4.0, 9.0, 16.0, 100.0]),  # monotone, not linear: exactly 1
        ([1.0, 2.0, 2.0, 3.0, 5.0], [2.0, 1.0, 3.0, 3.0, 4.0]),
    ]  # ties in both lists
    for _ in range(trials):
        n = int(torch.randint(4, 12, (1,), generator=g))
        cases.append((torch.randint(0, 6, (n,), generator=g).float().tolist(), torch.randn(n, generator=g).tolist()))
    for x, y in cases:
        ok, got = _call("rank correlation", fn, list(x), list(y))
        if not ok:
            return False
        want = rank_correlation(x, y)
        if got is None or abs(float(got) - want) > 1e-6:
            return _report(
                "rank correlation",
                False,
                f"x={[round(v, 2) for v in x]}, y={[round(v, 2) for v in y]}: expected {want:.4f}, got {got}",
            )
    return _report(
        "rank correlation", True, f"{len(cases)} cases (ties included) agree with sslbook.evaluation.rank_correlation"
    )


def check_pareto_front(fn, trials: int = 6) -> bool:
    """Exercise 11.2: ``fn(costs, scores) -> indices`` of the points no other point beats on both
    axes (lower cost, higher score), as :func:`sslbook.evaluation.pareto_front` (order does not matter)."""
    from sslbook.evaluation import pareto_front

    g = torch.Generator().manual_seed(1)
    cases = [([1.0, 2.0, 3.0], [0.5, 0.4, 0.9]), ([1.0, 1.0, 2.0], [0.5, 0.6, 0.6]), ([3.0, 2.0, 1.0], [0.3, 0.2, 0.1])]
    for _ in range(trials):
        n = int(torch.randint(3, 15, (1,), generator=g))
        cases.append((torch.rand(n, generator=g).tolist(), torch.randint(0, 5, (n,), generator=g).float().tolist()))
    for costs, scores in cases:
        ok, got = _call("Pareto front", fn, list(costs), list(scores))
        if not ok:
            return False
        want = sorted(pareto_front(costs, scores))
        if got is None or sorted(int(i) for i in got) != want:
            return _report(
                "Pareto front",
                False,
                f"costs={[round(c, 2) for c in costs]}, scores={scores}: expected indices {want}, got {got}",
            )
    return _report(
        "Pareto front", True, f"{len(cases)} cases (ties included) agree with sslbook.evaluation.pareto_front"
    )


# ----------------------------------------------------------------------------------------------
# Chapter 9: self-distillation (DINO)
# ----------------------------------------------------------------------------------------------


def check_dino_center(fn) -> bool:
    """Exercise 9.1: ``fn(center 1×K, teacher_logits B×K, m) -> new center 1×K``: DINO's centre update,
    C ← m·C + (1 − m)·mean over the batch of the teacher's logits (one process)."""
    g = torch.Generator().manual_seed(0)
    for b, k, m in [(8, 5, 0.9), (3, 7, 0.0), (16, 4, 0.99), (5, 3, 1.0)]:
        center, logits = torch.randn(1, k, generator=g), torch.randn(b, k, generator=g)
        ok, got = _call("DINO centre", fn, center.clone(), logits.clone(), m)
        if not ok:
            return False
        want = m * center + (1 - m) * logits.mean(dim=0, keepdim=True)
        try:
            got = torch.as_tensor(got).reshape(1, k)
        except (RuntimeError, TypeError, ValueError):
            return _report("DINO centre", False, f"return a 1×{k} tensor (one value per output dimension)")
        if not torch.allclose(got, want, atol=1e-5):
            return _report(
                "DINO centre",
                False,
                f"B={b}, K={k}, m={m}: expected {want.flatten()[:3].tolist()}…, "
                f"got {got.flatten()[:3].tolist()}… (average over the batch dimension)",
            )
    return _report("DINO centre", True, "C ← m C + (1 − m) · batch mean of the teacher's logits")


def check_dino_loss(fn, trials: int = 3) -> bool:
    """Exercise 9.2: ``fn(student_out, teacher_out, center, student_temp, teacher_temp) -> scalar``: DINO's
    loss as :func:`sslbook.losses.dino` computes it (the teacher's targets centred and sharpened, the
    cross-entropy averaged over every pair of different views and over the batch)."""
    from sslbook.losses import dino

    g = torch.Generator().manual_seed(0)
    for trial in range(trials):
        n, k, n_views = 6, 10, 2 + 2 * trial
        student = [torch.randn(n, k, generator=g) for _ in range(n_views)]
        teacher = [torch.randn(n, k, generator=g) for _ in range(2)]
        center = torch.randn(1, k, generator=g) * 0.5
        for ts, tt in [(0.1, 0.04), (0.2, 0.07)]:
            ok, got = _call(
                "DINO loss", fn, [s.clone() for s in student], [t.clone() for t in teacher], center.clone(), ts, tt
            )
            if not ok:
                return False
            want = dino(student, teacher, center, ts, tt)
            if got is None:
                return _report("DINO loss", False, "the function returned None: return the loss (a scalar tensor)")
            got = torch.as_tensor(got, dtype=torch.float32).detach()
            if got.numel() != 1 or not torch.allclose(got.reshape(()), want, atol=1e-4):
                return _report(
                    "DINO loss",
                    False,
                    f"{n_views} student views, τs={ts}, τt={tt}: expected {float(want):.4f}, "
                    f"got {got.flatten()[:3].tolist()}",
                )
    return _report("DINO loss", True, "matches sslbook.losses.dino (2 to 6 views, two temperature pairs)")


# ----------------------------------------------------------------------------------------------
# Chapter 8: without negatives (BYOL, SimSiam, Barlow Twins)
# ----------------------------------------------------------------------------------------------


def check_byol_loss(fn, trials: int = 4) -> bool:
    """Exercise 8.1: ``fn(p, z) -> scalar``: BYOL's normalised MSE ‖p̄ − z̄‖² (p̄, z̄: the rows l2-normalised),
    averaged over the batch, with **no gradient into the target** z. Equals ``2 + 2 * negative_cosine(p, z)``."""
    from sslbook.losses import negative_cosine

    name = "BYOL loss"
    g = torch.Generator().manual_seed(0)
    for n, d in [(8, 16), (5, 3), (16, 64), (2, 128)][:trials]:
        p = (3 * torch.randn(n, d, generator=g)).requires_grad_()
        z = (0.5 * torch.randn(n, d, generator=g)).requires_grad_()
        ok, got = _call(name, fn, p, z)
        if not ok:
            return False
        got = torch.as_tensor(got)
        want = 2 + 2 * negative_cosine(p.detach(), z.detach())
        if got.numel() != 1 or not torch.allclose(got.detach().float().reshape(()), want, atol=1e-5):
            return _report(
                name,
                False,
                f"N={n}, D={d}: expected {float(want):.5f}, got "
                f"{float(got.detach().reshape(-1)[0]) if got.numel() else 'an empty tensor'} (normalise both, then the squared distance, then the batch mean)",
            )
        if not got.requires_grad:
            return _report(name, False, "the loss has no gradient: the online prediction p must receive one")
        got.backward()
        if z.grad is not None and z.grad.abs().sum() > 0:
            return _report(name, False, "a gradient reached the target z: detach it (the stop-gradient)")
    return _report(name, True, "‖p̄ − z̄‖² = 2 − 2 cos(p, z), and the target gets no gradient")


def check_barlow_twins_loss(fn, trials: int = 4) -> bool:
    """Exercise 8.2: ``fn(z1, z2, lambd) -> scalar``: the Barlow Twins loss of :func:`sslbook.losses.barlow_twins`
    (standardise each dimension over the batch, C = z̃1ᵀz̃2 / N, Σ(1 − C_ii)² + λ Σ_{i≠j} C_ij²)."""
    from sslbook.losses import barlow_twins

    name = "Barlow Twins loss"
    g = torch.Generator().manual_seed(0)
    for n, d, lambd in [(32, 8, 5e-3), (16, 4, 0.5), (64, 32, 1e-2), (10, 3, 1.0)][:trials]:
        z1 = torch.randn(n, d, generator=g) * torch.rand(d, generator=g) * 4 + 2
        z2 = z1 + 0.7 * torch.randn(n, d, generator=g)
        ok, got = _call(name, fn, z1.clone(), z2.clone(), lambd)
        if not ok:
            return False
        got = torch.as_tensor(got).detach().float()
        want = barlow_twins(z1, z2, lambd)
        if got.numel() != 1 or not torch.allclose(got.reshape(()), want, rtol=1e-3, atol=1e-4):
            return _report(
                name,
                False,
                f"N={n}, D={d}, λ={lambd}: expected {float(want):.5f}, got "
                f"{float(got.reshape(-1)[0]) if got.numel() else 'an empty tensor'} (standardised with the biased "
                "variance, divided by N)",
            )
    return _report(name, True, "matches sslbook.losses.barlow_twins")


def check_output_std(fn) -> bool:
    """Exercise 8.3: ``fn(z) -> float``: the collapse monitor of SimSiam's paper: l2-normalise each row of the
    N×D outputs, take each dimension's standard deviation over the batch, average over the D dimensions.
    ≈ 1/√D for outputs spread over the sphere, 0 when every output is the same vector."""
    import torch.nn.functional as F

    name = "std of the normalised outputs"
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(512, 64, generator=g)
    cases = [
        ("spread out", spread),
        (
            "collapsed",
            torch.randn(1, 64, generator=g).expand(256, 64) * torch.rand(256, 1, generator=g)
            + 1e-3 * torch.randn(256, 64, generator=g),
        ),
        ("scaled rows", spread * torch.rand(512, 1, generator=g) * 10),
        ("half", torch.cat([spread[:, :32], torch.zeros(512, 32)], 1) + 0.1),
    ]
    for label, z in cases:
        ok, got = _call(name, fn, z.clone())
        if not ok:
            return False
        want = float(F.normalize(z, dim=1).std(0).mean())
        try:
            got = float(got)
        except (TypeError, ValueError, RuntimeError):
            return _report(name, False, "return one number (the mean over dimensions)")
        if abs(got - want) > 1e-3 * max(1.0, abs(want)) and abs(got - want) > 2e-4:
            return _report(
                name,
                False,
                f"{label} outputs: expected {want:.4f}, got {got:.4f} (normalise the rows first, "
                "then the std over the batch, dim 0)",
            )
    return _report(name, True, f"spread-out outputs give ≈ 1/√D = {1 / 64**0.5:.3f}, collapsed ones ≈ 0")


def check_scaled_lr(fn) -> bool:
    """Exercise 12.1: ``fn(base_lr, global_batch) -> float``: the linear scaling rule the trainer applies,
    lr = base_lr × global batch / 256 (Goyal et al. 2017), where the global batch is every process's
    images of one step together, so the rate does not change with the number of processes."""
    name = "linear scaling rule"
    for base, batch in [(0.3, 4096), (1.5e-4, 1024), (0.03, 256), (0.002, 128), (1.0, 512)]:
        ok, got = _call(name, fn, base, batch)
        if not ok:
            return False
        want = base * batch / 256
        try:
            got = float(got)
        except (TypeError, ValueError):
            return _report(name, False, "return one number, the learning rate")
        if abs(got - want) > 1e-9 * max(1.0, want):
            return _report(name, False, f"base_lr {base}, global batch {batch}: expected {want:g}, got {got:g}")
    return _report(name, True, "lr = base_lr × global batch / 256")


def check_mfu(fn) -> bool:
    """Exercise 12.2: ``fn(flops_per_step, seconds_per_step, peak_flops_per_s, processes) -> float``: the
    model FLOPs utilisation, achieved FLOP/s over the peak FLOP/s of all the devices, a fraction in [0, 1].
    ``flops_per_step`` counts every process's work (the global batch), as ``python -m sslbook bench`` does."""
    name = "model FLOPs utilisation"
    for flops, seconds, peak, k in [
        (22.9e9, 0.05, 989e12, 1),
        (1.2e12, 0.8, 312e12, 1),
        (4.8e12, 0.5, 989e12, 8),
        (3e15, 2.0, 989e12, 4),
    ]:
        ok, got = _call(name, fn, flops, seconds, peak, k)
        if not ok:
            return False
        want = flops / seconds / (peak * k)
        try:
            got = float(got)
        except (TypeError, ValueError):
            return _report(name, False, "return one number, a fraction")
        if abs(got - want) > 1e-6 * max(want, 1e-12):
            return _report(
                name,
                False,
                f"{flops:.3g} FLOPs in {seconds} s on {k} × {peak:.3g} FLOP/s: expected {want:.4g}, got {got:.4g}",
            )
    return _report(name, True, "MFU = FLOPs per step / seconds per step / (peak FLOP/s × processes)")


def check_mean_iou(fn, trials: int = 6) -> bool:
    """Exercise 13.1: ``fn(pred, target, num_classes) -> float``: the mean over the classes present in the
    targets or the predictions of TP / (TP + FP + FN), over every pixel, as :func:`sslbook.dense.segmentation_scores`
    of :func:`sslbook.dense.confusion_matrix`."""
    from sslbook.dense import confusion_matrix, segmentation_scores

    g = torch.Generator().manual_seed(0)
    cases = [(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 1]]), 3)]  # class 2 seen nowhere: not averaged
    for _ in range(trials):
        k = int(torch.randint(2, 6, (1,), generator=g))
        target = torch.randint(0, k, (3, 8, 8), generator=g)
        noise = torch.randint(0, k, target.shape, generator=g)
        pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target, noise)
        cases.append((pred, target, k))
    for pred, target, k in cases:
        ok, got = _call("mean IoU", fn, pred.clone(), target.clone(), k)
        if not ok:
            return False
        want = torch.tensor(segmentation_scores(confusion_matrix(pred, target, k))["miou"], dtype=torch.float32)
        if got is None or not _scalar_matches("mean IoU", got, want, f"{k} classes, {target.numel()} pixels"):
            return False if got is not None else _report("mean IoU", False, "returned None")
    return _report("mean IoU", True, f"{len(cases)} cases (a class seen nowhere included) agree with sslbook.dense")


def check_box_iou(fn, trials: int = 5) -> bool:
    """Exercise 13.2: ``fn(a, b) -> tensor``: the IoU of matching rows of two N×4 box lists ``(x0, y0, x1, y1)``,
    0 where the boxes do not overlap, as :func:`sslbook.dense.box_iou`."""
    from sslbook.dense import box_iou

    g = torch.Generator().manual_seed(0)
    fixed_a = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 5.0]])
    fixed_b = torch.tensor(
        [[2.0, 2.0, 6.0, 6.0], [5.0, 5.0, 7.0, 7.0], [1.0, 1.0, 3.0, 5.0]]
    )  # partial, disjoint, equal
    cases = [(fixed_a, fixed_b)]
    for _ in range(trials):
        lo = torch.rand(10, 2, generator=g) * 20
        a = torch.cat([lo, lo + 1 + torch.rand(10, 2, generator=g) * 10], 1)
        lo2 = lo + torch.randn(10, 2, generator=g) * 4
        b = torch.cat([lo2, lo2 + 1 + torch.rand(10, 2, generator=g) * 10], 1)
        cases.append((a, b))
    for a, b in cases:
        ok, got = _call("box IoU", fn, a.clone(), b.clone())
        if not ok:
            return False
        want = box_iou(a, b)
        got = torch.as_tensor(got, dtype=torch.float32) if got is not None else None
        if got is None or got.shape != want.shape or not torch.allclose(got, want, atol=1e-5):
            return _report(
                "box IoU",
                False,
                f"boxes {a[:3].tolist()} and {b[:3].tolist()}: expected "
                f"{[round(v, 4) for v in want[:3].tolist()]}, got {None if got is None else got[:3].tolist()}",
            )
    return _report(
        "box IoU", True, f"{len(cases)} cases (overlapping, disjoint, equal) agree with sslbook.dense.box_iou"
    )

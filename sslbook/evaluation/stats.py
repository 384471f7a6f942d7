"""Statistics of a comparison: Spearman's rank correlation, the Pareto front of cost against score, and the
bootstrap of a test-set score."""

from __future__ import annotations

from typing import Sequence

import torch


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of the values of ``x``; tied values share the mean of the ranks they occupy."""
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=x.dtype)
    for v in torch.unique(x):
        tied = x == v
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: the Pearson correlation of the two lists' ranks (ties get their
    average rank). 1 when ``y`` orders the items exactly as ``x`` does, −1 when exactly reversed.
    Used to ask whether a small-scale comparison ranks methods as the published full-scale one does."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need two 1-D lists of the same length ≥ 2, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.norm() * ry.norm()).item()
    if denom == 0:
        raise ValueError("a list whose values are all equal has no ranking to correlate")
    return float((rx @ ry).item() / denom)


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points that no other point beats on both axes: an item is on the front unless
    another costs no more *and* scores no less, and is strictly better on one of the two. Sorted by cost.
    The compute-efficiency question "what is the best accuracy for this much training?" is answered by it."""
    c, s = torch.as_tensor(costs, dtype=torch.float64), torch.as_tensor(scores, dtype=torch.float64)
    if c.shape != s.shape or c.ndim != 1:
        raise ValueError(f"costs and scores must be 1-D of the same length, got {tuple(c.shape)} and {tuple(s.shape)}")
    front = []
    for i in range(len(c)):
        dominated = (c <= c[i]) & (s >= s[i]) & ((c < c[i]) | (s > s[i]))
        if not bool(dominated.any()):
            front.append(i)
    return sorted(front, key=lambda i: (float(c[i]), -float(s[i])))


def bootstrap(values, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """The test set's own sampling noise on a mean score: resample the per-item scores with replacement.

    ``values`` holds one score per test item (for an accuracy: 1 where the prediction is right, 0 where it is
    wrong). Each of ``resamples`` draws picks ``len(values)`` items with replacement (a generator seeded with
    ``seed``, so the result is reproducible) and takes their mean; the spread of those means says how much the
    score would move on another test set of the same size from the same distribution.

    Returns:
        dict with ``mean`` (the score on the test set itself), ``std`` (the standard deviation of the
        resampled means) and ``low``, ``high`` (the central ``level`` percentile interval of the resampled
        means, 95% by default). All plain floats; ``std`` is 0 when every item scores the same.
    """
    x = torch.as_tensor(values).detach().flatten().to(torch.float64).cpu()
    if x.numel() == 0:
        raise ValueError("bootstrap needs at least one score")
    if not (isinstance(resamples, int) and resamples >= 2):
        raise ValueError(f"resamples must be an integer >= 2, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n = x.numel()
    generator = torch.Generator().manual_seed(seed)
    means = torch.empty(resamples, dtype=torch.float64)
    chunk = max(1, 4_000_000 // n)  # resamples drawn at once: at most ~4M indices in memory
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        idx = torch.randint(n, (rows, n), generator=generator)
        means[start : start + rows] = x[idx].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return {"mean": float(x.mean()), "std": float(means.std()), "low": float(low), "high": float(high)}

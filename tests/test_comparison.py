"""The comparison chapter's tools: rank correlation and the Pareto front, and their exercise checkers."""

import pytest
import torch
from scipy.stats import spearmanr

from sslbook.evaluation import pareto_front, rank_correlation
from sslbook.exercises import check_pareto_front, check_rank_correlation


def test_rank_correlation_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = int(torch.randint(3, 20, (1,), generator=g))
        x = torch.randint(0, 5, (n,), generator=g).float().tolist()  # many ties
        y = torch.randn(n, generator=g).tolist()
        if len(set(x)) == 1:
            continue
        assert rank_correlation(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-9)
    assert rank_correlation([1, 2, 3, 4], [1, 8, 27, 1000]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_rank_correlation_refuses_bad_input():
    with pytest.raises(ValueError, match="same length"):
        rank_correlation([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="all equal"):
        rank_correlation([1, 1, 1], [1, 2, 3])


def test_pareto_front_by_brute_force():
    assert pareto_front([1, 2, 3], [0.5, 0.4, 0.9]) == [0, 2]  # the middle one costs more and scores less
    assert pareto_front([1, 1, 2], [0.5, 0.6, 0.6]) == [
        1
    ]  # same cost, lower score: dominated; same score, higher cost: too
    assert pareto_front([2, 2], [0.5, 0.5]) == [0, 1]  # identical points dominate neither
    g = torch.Generator().manual_seed(0)
    c, s = torch.rand(30, generator=g).tolist(), torch.rand(30, generator=g).tolist()
    front = pareto_front(c, s)
    for i in range(30):
        beaten = any(c[j] <= c[i] and s[j] >= s[i] and (c[j] < c[i] or s[j] > s[i]) for j in range(30))
        assert (i in front) == (not beaten)
    assert [c[i] for i in front] == sorted(c[i] for i in front)
    scores_on_front = [s[i] for i in front]
    assert scores_on_front == sorted(scores_on_front)  # paying more on the front buys a better score


def test_checkers_accept_the_answer_and_refuse_wrong_ones(capsys):
    assert check_rank_correlation(rank_correlation)
    pearson = lambda x, y: float(torch.corrcoef(torch.tensor([x, y], dtype=torch.float64))[0, 1])  # noqa: E731

    def ranks_without_tie_averaging(x, y):
        rx = torch.argsort(torch.argsort(torch.tensor(x))).double()
        ry = torch.argsort(torch.argsort(torch.tensor(y))).double()
        return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])

    assert not check_rank_correlation(pearson)
    assert not check_rank_correlation(ranks_without_tie_averaging)
    assert check_pareto_front(pareto_front)
    assert not check_pareto_front(lambda c, s: [max(range(len(s)), key=lambda i: s[i])])  # the best score only
    assert not check_pareto_front(
        lambda c, s: [i for i in range(len(c)) if not any(c[j] < c[i] and s[j] > s[i] for j in range(len(c)))]
    )  # strict only

    def todo(*a):
        raise NotImplementedError

    assert not check_rank_correlation(todo) and not check_pareto_front(todo)
    assert "not implemented yet" in capsys.readouterr().out

"""Spread over seeds, not single numbers: is a method's gain over its random-init floor larger than the noise?

A single run's kNN or linear-probe top-1 mixes what the method learned with two kinds of noise: the seed
(initialisation, augmentations, batch order) and the test set (a finite sample of images). :func:`compare`
trains each method with several seeds and sets it against two controls of its own architecture, also over
those seeds:

- ``random``: the backbone at random initialisation;
- ``bn_refreshed``: the same random weights with BatchNorm's running statistics measured on the training
  images (:func:`sslbook.evaluation.refresh_bn_statistics`), which any training gives for free.

On each protocol the **floor** is the stronger of the two (the higher mean over seeds). The gain is the
method's mean minus the floor's mean, and it is called *beyond noise* when a one-sided t-test (method above
floor) rejects at 5% on both kNN and the linear probe: Welch's test on the two sets of seeds by default, or
(``test="paired"``) Student's test on the per-seed differences. Pairing is sound here because seed s of the
method starts from the very weights that seed s of its floor evaluates, so the differences remove what the
initialisation alone moves, often several points on both protocols. Beside the seed-to-seed standard deviations the
report gives the test set's own noise (the bootstrap std of each run's top-1, averaged over the seeds), so a
reader sees which of the two dominates.

Every run is cached in :func:`~sslbook.config.run_dir` and loaded when it is finished: seed 0 of a method,
with no option that changes the run, is the chapters' own ``run_dir(method)``, and its plain random-init
control is chapter 11's ``run_dir("random-init-" + method)``.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Iterable, Sequence

from sslbook.config import ConfigError, current_preset, resolve, run_dir
from sslbook.trainer import RESUME_MAY_CHANGE, train

CONTROLS = ("random", "bn_refreshed")
PROTOCOLS = (("knn", "knn_top1"), ("linear", "linear_top1"))
DEFAULT_RESAMPLES = 1000
# compare chooses these for every run itself
_OWN_OPTIONS = ("seed", "out", "resume", "overwrite", "bn_refresh", "progress", "eval_protocols")


# ----------------------------------------------------------------------------------------------------------------
# The statistics
# ----------------------------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1 in the denominator); the std is None for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's t-test of "the mean of ``a`` is larger than the mean of ``b``" (unequal variances, one-sided).

    ``t = (mean_a − mean_b) / sqrt(s_a²/n_a + s_b²/n_b)`` with the sample variances ``s²`` and the
    Welch–Satterthwaite degrees of freedom ``(s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1))``;
    ``p`` is the upper tail of Student's t at ``t``. Each sample needs at least two values. When neither sample
    varies, the test degenerates: ``p`` is 0 if ``a``'s mean is larger, else 1 (``t`` and ``df`` are None).

    Returns:
        dict with ``t``, ``df`` and ``p``.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs at least two values per sample, got {len(a)} and {len(b)}")
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    va, vb = sa**2 / len(a), sb**2 / len(b)
    if va + vb == 0:
        return {"t": None, "df": None, "p": 0.0 if ma > mb else 1.0}
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va**2 / (len(a) - 1) if va else 0.0) + (vb**2 / (len(b) - 1) if vb else 0.0))
    from scipy.stats import t as student_t

    return {"t": t, "df": df, "p": float(student_t.sf(t, df))}


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Student's t-test of "``a`` is larger than ``b``" on the paired differences d_i = a_i − b_i (one-sided).

    ``t = mean(d) / (s_d / sqrt(n))`` with ``n − 1`` degrees of freedom; ``p`` is the upper tail of Student's t
    at ``t``. The samples must be paired item by item (here: the same seed) and hold at least two pairs. When
    the differences do not vary, ``p`` is 0 if they are positive, else 1 (``t`` is None).

    Returns:
        dict with ``t``, ``df`` and ``p``.
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a paired test needs two samples of the same length, at least 2, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    mean, std = mean_std(d)
    df = len(d) - 1
    if std == 0:
        return {"t": None, "df": df, "p": 0.0 if mean > 0 else 1.0}
    t = mean / (std / math.sqrt(len(d)))
    from scipy.stats import t as student_t

    return {"t": t, "df": df, "p": float(student_t.sf(t, df))}


TESTS = {"welch": welch_t_test, "paired": paired_t_test}


def gain_beyond_noise(
    method_scores: Sequence[float], floor_scores: Sequence[float], alpha: float = 0.05, test: str = "welch"
) -> dict:
    """The decision on one protocol: is the method's mean above the floor's by more than the seeds' noise?

    ``test``: ``"welch"`` (:func:`welch_t_test`, the two sets of seeds as independent samples) or ``"paired"``
    (:func:`paired_t_test` on the per-seed differences; the lists must be in seed order).

    Returns:
        dict with ``gain`` (method mean − floor mean), ``p`` (the test's one-sided p-value, None with fewer than
        two seeds on a side: the seed-to-seed spread cannot be measured, so no gain can be shown beyond it)
        and ``beyond_noise`` (``p < alpha``).
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    gain = mean_std(method_scores)[0] - mean_std(floor_scores)[0]
    if len(method_scores) < 2 or len(floor_scores) < 2:
        return {"gain": gain, "p": None, "beyond_noise": False}
    p = TESTS[test](method_scores, floor_scores)["p"]
    return {"gain": gain, "p": p, "beyond_noise": bool(p < alpha)}


# ----------------------------------------------------------------------------------------------------------------
# The runs
# ----------------------------------------------------------------------------------------------------------------


def _tag(overrides: dict) -> str:
    """A short name for the options that change what a run is (not how it is evaluated), or ''."""
    defining = {k: v for k, v in overrides.items() if k not in RESUME_MAY_CHANGE or k in ("epochs", "max_steps")}
    if not defining:
        return ""
    return "-" + hashlib.sha1(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_names(method: str, seed: int, overrides: dict | None = None) -> dict:
    """The :func:`~sslbook.config.run_dir` names of one seed's three runs: ``method``, ``random``, ``bn_refreshed``.

    Seed 0 without run-changing options uses the chapters' names (``method``, ``random-init-<method>``,
    ``bn-refreshed-<method>``); any other seed or option set gets its own folder."""
    overrides = dict(overrides or {})
    tag = _tag(overrides)
    floor_tag = _tag({k: v for k, v in overrides.items() if k not in ("epochs", "max_steps")})

    def name(base: str, t: str) -> str:
        return base if seed == 0 and not t else f"{base}{t}-seed{seed}"

    return {
        "method": name(method, tag),
        "random": name(f"random-init-{method}", floor_tag),
        "bn_refreshed": name(f"bn-refreshed-{method}", floor_tag),
    }


def _run_options(kind: str, seed: int, overrides: dict) -> dict:
    opts = dict(overrides, seed=seed, eval_protocols=("knn", "linear"))
    if kind != "method":
        opts = {k: v for k, v in opts.items() if k not in ("epochs", "max_steps", "target_knn")}
        opts.update(epochs=0, bn_refresh=kind == "bn_refreshed")
    return opts


def compare(
    methods: Iterable[str],
    preset: str | None = None,
    seeds: int = 3,
    progress: bool = True,
    alpha: float = 0.05,
    test: str = "welch",
    **overrides,
) -> list[dict]:
    """Each method over ``seeds`` seeds against its own random-init floors; one dict per method.

    For each method and each seed ``0 … seeds − 1``: the method's run, its backbone at random initialisation and
    the same with BatchNorm statistics refreshed, each trained (or loaded from :func:`~sslbook.config.run_dir`)
    and evaluated with kNN and the linear probe, with ``eval_bootstrap`` test-set resamples (default 1000).

    Args:
        methods: method names (see :func:`sslbook.list_methods`).
        preset: default the book's current preset.
        test: ``"welch"`` or ``"paired"`` (see :func:`gain_beyond_noise`).
        overrides: training options for every run (``epochs``, ``data``, ``data_kwargs``, ``linear_epochs``,
            ``method_kwargs``…), validated like any run's; the random-init controls ignore ``epochs`` and
            ``max_steps``. The seed, the run folder and the protocols are compare's own.

    Returns:
        one dict per method, with ``method``, ``preset``, ``seeds``; the method's ``knn_mean``, ``knn_std``,
        ``linear_mean``, ``linear_std``; each control's (``random_…``, ``bn_refreshed_…``); the floor on each
        protocol (``floor_knn``, ``floor_linear``: which control; ``floor``: that name if both agree) with its
        ``floor_knn_mean``, ``floor_knn_std``, ``floor_linear_mean``, ``floor_linear_std``; ``gain_knn``,
        ``gain_linear``, ``p_knn``, ``p_linear`` (one-sided, of ``test``; None with one seed), ``test``; ``beyond_noise_knn``,
        ``beyond_noise_linear`` and ``beyond_noise`` (both); ``knn_boot_std``, ``linear_boot_std`` (the test
        set's noise on the method's top-1, mean over seeds) and ``knn_noise``, ``linear_noise`` (which is the
        larger: ``"seeds"`` or ``"test set"``; None with one seed); the per-seed scores ``knn``, ``linear``; and
        ``note`` (why the test could not be made, or None). Stds are None with one seed.
    """
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ValueError("compare needs at least one method")
    if not (isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1):
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    if not (isinstance(alpha, float) and 0 < alpha < 1):
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    own = sorted(set(overrides) & set(_OWN_OPTIONS))
    if own:
        raise ConfigError(f"compare chooses {', '.join(own)} for every run itself; leave it out")
    overrides.setdefault("eval_bootstrap", DEFAULT_RESAMPLES)
    preset = preset or current_preset()
    for m in methods:  # every setting of every run checked before the first one trains
        for kind in ("method", *CONTROLS):
            resolve(m, preset, **_run_options(kind, 0, overrides))

    from tqdm.auto import tqdm

    bar = tqdm(total=len(methods) * seeds * 3, desc="compare", disable=not progress)
    rows = []
    try:
        for m in methods:
            metrics: dict[str, list[dict]] = {"method": [], "random": [], "bn_refreshed": []}
            for s in range(seeds):
                names = run_names(m, s, overrides)
                for kind in ("method", *CONTROLS):
                    bar.set_postfix_str(names[kind])
                    out = run_dir(names[kind], preset)
                    opts = _run_options(kind, s, overrides)
                    result = train(m, preset, out=out, resume=True, progress=False, **opts)
                    metrics[kind].append(result.metrics)
                    bar.update(1)
            rows.append(_summarise(m, preset, seeds, metrics, alpha, test))
    finally:
        bar.close()
    return rows


def _summarise(method: str, preset: str, seeds: int, metrics: dict, alpha: float, test: str = "welch") -> dict:
    row: dict = {"method": method, "seeds": seeds, "preset": preset, "alpha": alpha, "test": test}
    scores = {kind: {p: [r[key] for r in runs] for p, key in PROTOCOLS} for kind, runs in metrics.items()}
    for p, _ in PROTOCOLS:
        row[f"{p}_mean"], row[f"{p}_std"] = mean_std(scores["method"][p])
    for kind in CONTROLS:
        for p, _ in PROTOCOLS:
            row[f"{kind}_{p}_mean"], row[f"{kind}_{p}_std"] = mean_std(scores[kind][p])
    verdicts = []
    for p, key in PROTOCOLS:
        control = max(CONTROLS, key=lambda c: row[f"{c}_{p}_mean"])  # ties: the plain random init, listed first
        row[f"floor_{p}"] = control
        row[f"floor_{p}_mean"], row[f"floor_{p}_std"] = row[f"{control}_{p}_mean"], row[f"{control}_{p}_std"]
        decision = gain_beyond_noise(scores["method"][p], scores[control][p], alpha, test)
        row[f"gain_{p}"], row[f"p_{p}"] = decision["gain"], decision["p"]
        row[f"beyond_noise_{p}"] = decision["beyond_noise"]
        verdicts.append(decision["beyond_noise"])
        boot = [r.get(f"{key}_boot_std") for r in metrics["method"]]
        row[f"{p}_boot_std"] = sum(boot) / len(boot) if all(b is not None for b in boot) else None
        seed_std = row[f"{p}_std"]
        row[f"{p}_noise"] = (  # which noise is the larger on the method's score: the seeds' or the test set's
            None
            if seed_std is None or row[f"{p}_boot_std"] is None
            else "seeds"
            if seed_std > row[f"{p}_boot_std"]
            else "test set"
        )
    row["floor"] = (
        row["floor_knn"]
        if row["floor_knn"] == row["floor_linear"]
        else f"{row['floor_knn']} (kNN), {row['floor_linear']} (linear)"
    )
    row["beyond_noise"] = all(verdicts)
    row["knn"], row["linear"] = scores["method"]["knn"], scores["method"]["linear"]
    row["note"] = (
        "one seed: no seed-to-seed spread to test the gain against, so it is not called beyond noise"
        if seeds < 2
        else None
    )
    return row


# ----------------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------------


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.1%}" + (f" ± {std:.1%}" if std is not None else "")


def _p(p: float | None) -> str:
    return "–" if p is None else f"{p:.3f}"


def format_table(rows: Sequence[dict]) -> str:
    """The rows of :func:`compare` as a plain-text table, one line per method."""
    head = [
        "method",
        "seeds",
        "kNN",
        "linear",
        "floor kNN",
        "floor linear",
        "floor",
        "gain kNN (p)",
        "gain linear (p)",
        "beyond noise",
        "bootstrap std kNN / linear",
    ]
    lines = [head]
    for r in rows:
        boot = " / ".join("–" if r[f"{p}_boot_std"] is None else f"{r[f'{p}_boot_std']:.1%}" for p, _ in PROTOCOLS)
        lines.append(
            [
                r["method"],
                str(r["seeds"]),
                _pm(r["knn_mean"], r["knn_std"]),
                _pm(r["linear_mean"], r["linear_std"]),
                _pm(r["floor_knn_mean"], r["floor_knn_std"]),
                _pm(r["floor_linear_mean"], r["floor_linear_std"]),
                r["floor"],
                f"{r['gain_knn']:+.1%} ({_p(r['p_knn'])})",
                f"{r['gain_linear']:+.1%} ({_p(r['p_linear'])})",
                "yes" if r["beyond_noise"] else "no",
                boot,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{r['method']}: {r['note']}" for r in rows if r.get("note")]
    alpha = rows[0]["alpha"] if rows else 0.05
    named = {
        "welch": "Welch's t-test, one-sided",
        "paired": "t-test on the per-seed differences (each seed's run starts from its floor's weights), one-sided",
    }
    legend = (
        "± is the std over seeds; the floor is the stronger of random init and random init with BatchNorm "
        f"statistics refreshed, per protocol; p: {named[rows[0].get('test', 'welch') if rows else 'welch']}; "
        f"beyond noise: p < {alpha} on both."
    )
    return "\n".join(text + [""] + notes + [legend])

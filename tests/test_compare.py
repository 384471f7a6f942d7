"""Spread over seeds: the bootstrap of a test score, the BN-refreshed floor, Welch's test and `compare`."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import sslbook
import sslbook.config
import sslbook.trainer
from sslbook.cli import main
from sslbook.comparison import format_table, gain_beyond_noise, paired_t_test, run_names, welch_t_test
from sslbook.data.base import DataInfo, TensorImageDataset
from sslbook.evaluation import bootstrap, evaluate, refresh_bn_statistics

# ---------------------------------------------------------------- bootstrap of a test-set score


def test_bootstrap_is_zero_for_all_correct_and_shrinks_with_more_test_items():
    assert bootstrap(torch.ones(50, dtype=torch.bool))["std"] == 0.0
    small = bootstrap(torch.arange(100) % 2 == 0, resamples=500, seed=1)
    large = bootstrap(torch.arange(2500) % 2 == 0, resamples=500, seed=1)
    assert small["mean"] == large["mean"] == 0.5
    # the binomial's sqrt(p (1 - p) / n): 0.05 and 0.01
    assert 0.04 < small["std"] < 0.06 and 0.008 < large["std"] < 0.012
    assert small["low"] < 0.5 < small["high"] and large["high"] - large["low"] < small["high"] - small["low"]
    assert bootstrap(torch.arange(100) % 2 == 0, resamples=500, seed=1) == small  # seeded
    with pytest.raises(ValueError):
        bootstrap([])


# ---------------------------------------------------------------- BN-refreshed floor


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.out_dim = 4

    def forward(self, x):
        return self.drop(self.bn(self.conv(x)).mean((2, 3)))


def _images(n=40, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorImageDataset(
        torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
        torch.arange(n) % 2,
        DataInfo("noise", ["a", "b"], size),
    )


def test_refresh_bn_statistics_is_the_cumulative_mean_of_the_batches_and_changes_no_parameter():
    torch.manual_seed(0)
    net = _Net()
    params = {k: v.clone() for k, v in net.named_parameters()}
    data = _images(40)
    out = refresh_bn_statistics(net, data, batch_size=16)  # batches of 16, 16, 8
    assert out is net and not net.training and all(not m.training for m in net.modules())
    assert all(torch.equal(v, params[k]) for k, v in net.named_parameters())
    assert net.bn.momentum == 0.1  # restored
    means, variances = [], []
    with torch.no_grad():
        for start in range(0, 40, 16):
            z = net.conv(data.images[start : start + 16].float() / 255)
            means.append(z.mean((0, 2, 3)))
            variances.append(z.var((0, 2, 3), unbiased=True))
    assert torch.allclose(net.bn.running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert torch.allclose(net.bn.running_var, torch.stack(variances).mean(0), atol=1e-5)
    # a second refresh starts again from a reset: the same statistics
    before = net.bn.running_mean.clone()
    refresh_bn_statistics(net, data, batch_size=16)
    assert torch.allclose(net.bn.running_mean, before)


def test_refresh_bn_statistics_leaves_a_backbone_without_batchnorm_unchanged_and_says_so():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4), nn.LayerNorm(4))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(UserWarning, match="no BatchNorm"):
        assert refresh_bn_statistics(net, _images(8)) is net
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_evaluate_adds_bootstrap_noise_only_when_asked():
    torch.manual_seed(0)
    net, train, test = _Net(), _images(40, seed=1), _images(30, seed=2)
    plain = evaluate(net, train, test, linear_epochs=2, k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        boot = evaluate(net, train, test, linear_epochs=2, k=5, bootstrap=200)
    assert set(plain) == {"knn_top1", "linear_top1"}
    assert {k: boot[k] for k in plain} == plain
    for name in plain:
        assert boot[f"{name}_boot_std"] >= 0 and boot[f"{name}_low"] <= boot[name] <= boot[f"{name}_high"]


# ---------------------------------------------------------------- Welch's test and the decision


def test_welch_t_test_matches_scipy():
    from scipy.stats import ttest_ind

    a, b = [0.61, 0.64, 0.60, 0.66], [0.55, 0.58, 0.50]
    ours = welch_t_test(a, b)
    ref = ttest_ind(a, b, equal_var=False, alternative="greater")
    assert ours["t"] == pytest.approx(ref.statistic, rel=1e-9) and ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours["df"] == pytest.approx(ref.df, rel=1e-9)
    assert welch_t_test([0.5, 0.5], [0.4, 0.4])["p"] == 0.0 and welch_t_test([0.4, 0.4], [0.4, 0.4])["p"] == 1.0
    with pytest.raises(ValueError, match="two values"):
        welch_t_test([0.5], [0.4, 0.3])


def test_beyond_noise_only_when_the_gain_clears_the_seed_spread():
    floor = [0.50, 0.52, 0.48]
    within = gain_beyond_noise([0.51, 0.47, 0.55], floor)
    assert within["gain"] == pytest.approx(0.01) and within["p"] > 0.05 and not within["beyond_noise"]
    clear = gain_beyond_noise([0.70, 0.71, 0.69], floor)
    assert clear["gain"] == pytest.approx(0.2) and clear["p"] < 0.001 and clear["beyond_noise"]
    below = gain_beyond_noise([0.30, 0.31, 0.29], floor)
    assert below["p"] > 0.99 and not below["beyond_noise"]
    one_seed = gain_beyond_noise([0.9], [0.1])
    assert one_seed["p"] is None and not one_seed["beyond_noise"]


def test_paired_t_test_matches_scipy_and_sees_a_consistent_gain_that_welch_calls_noise():
    from scipy.stats import ttest_rel

    # AET's linear probe over seeds 0-2 against each seed's own random init (the recipe's comment): the floors
    # move by several points with the initialisation, the per-seed gains much less
    aet, floor = [0.7545, 0.72, 0.747], [0.687, 0.6465, 0.723]
    ours, ref = paired_t_test(aet, floor), ttest_rel(aet, floor, alternative="greater")
    assert ours["t"] == pytest.approx(ref.statistic, rel=1e-9) and ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours["df"] == 2
    assert gain_beyond_noise(aet, floor, test="paired")["beyond_noise"]
    assert not gain_beyond_noise(aet, floor)["beyond_noise"]  # Welch: p ≈ 0.057
    # differences that change sign from seed to seed are no gain, paired or not
    mixed = [0.70, 0.64, 0.73]
    assert not gain_beyond_noise(mixed, floor, test="paired")["beyond_noise"]
    assert paired_t_test([0.5, 0.6], [0.4, 0.5])["p"] == 0.0 and paired_t_test([0.4, 0.5], [0.4, 0.5])["p"] == 1.0
    with pytest.raises(ValueError, match="same length"):
        paired_t_test([0.5, 0.6, 0.7], [0.4, 0.5])
    with pytest.raises(ValueError, match="test must be one of welch, paired"):
        gain_beyond_noise(aet, floor, test="wilcoxon")
    with pytest.raises(ValueError, match="test must be one of"):
        sslbook.compare(["supervised"], seeds=2, test="wilcoxon")


def test_run_names_reuse_the_chapters_folders_for_seed_0_without_run_options():
    assert run_names("simclr", 0) == {
        "method": "simclr",
        "random": "random-init-simclr",
        "bn_refreshed": "bn-refreshed-simclr",
    }
    assert run_names("simclr", 0, {"linear_epochs": 5, "eval_bootstrap": 100})["method"] == "simclr"
    assert run_names("simclr", 2)["method"] == "simclr-seed2"
    short = run_names("simclr", 0, {"epochs": 1})
    assert short["method"].startswith("simclr-") and short["method"].endswith("-seed0")
    assert short["random"] == "random-init-simclr"  # the controls train no epoch: the same runs
    assert run_names("simclr", 0, {"epochs": 2})["method"] != short["method"]


# ---------------------------------------------------------------- compare, end to end


KEYS = {
    "method", "seeds", "preset", "knn_mean", "knn_std", "linear_mean", "linear_std", "floor_knn_mean",
    "floor_knn_std", "floor_linear_mean", "floor_linear_std", "floor", "random_knn_mean", "random_linear_mean",
    "bn_refreshed_knn_mean", "bn_refreshed_linear_mean", "gain_knn", "gain_linear", "p_knn", "p_linear",
    "knn_boot_std", "linear_boot_std", "beyond_noise",
}  # fmt: skip


@pytest.fixture
def tiny(shapes_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SSLBOOK_RUNS", str(tmp_path / "runs"))
    return dict(
        backbone="convnet_small",
        batch_size=64,
        epochs=1,
        data_kwargs=dict(n_train=200, n_test=100, root=str(shapes_root)),
        linear_epochs=2,
        monitor_knn=0,
        eval_bootstrap=100,
        num_workers=0,
    )


def test_compare_reports_every_key_and_reuses_its_runs(tiny, tmp_path):
    rows = sslbook.compare(["supervised"], "tiny", seeds=2, progress=False, **tiny)
    (row,) = rows
    assert KEYS <= set(row) and row["method"] == "supervised" and row["seeds"] == 2
    json.dumps(row)
    assert row["floor"] in ("random", "bn_refreshed") or "(kNN)" in row["floor"]
    assert row["floor_knn_mean"] == max(row["random_knn_mean"], row["bn_refreshed_knn_mean"])
    assert row["gain_knn"] == pytest.approx(row["knn_mean"] - row["floor_knn_mean"])
    assert row["beyond_noise"] == (row["p_knn"] < 0.05 and row["p_linear"] < 0.05)
    assert 0 < row["knn_boot_std"] < 0.2 and len(row["knn"]) == 2
    assert row["knn_noise"] == ("seeds" if row["knn_std"] > row["knn_boot_std"] else "test set")
    checkpoints = sorted((tmp_path / "runs" / "tiny").glob("*/last.pt"))
    assert len(checkpoints) == 6  # 2 seeds × (the method, random init, random init with BN refreshed)
    stamps = {p: p.stat().st_mtime_ns for p in checkpoints}
    again = sslbook.compare(["supervised"], "tiny", seeds=2, progress=False, **tiny)
    assert again == rows and {p: p.stat().st_mtime_ns for p in checkpoints} == stamps
    assert "supervised" in format_table(rows) and "beyond noise" in format_table(rows)
    assert row["test"] == "welch" and "Welch" in format_table(rows)
    (paired,) = sslbook.compare(["supervised"], "tiny", seeds=2, progress=False, test="paired", **tiny)  # same runs
    assert (
        paired["test"] == "paired" and paired["knn"] == row["knn"] and "per-seed differences" in format_table([paired])
    )
    assert paired["p_knn"] is not None and paired["beyond_noise"] == (
        paired["p_knn"] < 0.05 and paired["p_linear"] < 0.05
    )


def test_compare_with_one_seed_says_the_test_is_impossible(tiny):
    (row,) = sslbook.compare(["supervised"], "tiny", seeds=1, progress=False, **tiny)
    assert row["p_knn"] is None and row["knn_std"] is None and row["beyond_noise"] is False
    assert "one seed" in row["note"]


def test_cli_compare_json_is_one_line_per_method(tiny, capsys):
    args = ["compare", "supervised", "--seeds", "1", "--json", "--no-progress", "--epochs", "1"]
    for k in ("backbone", "batch_size", "data_kwargs", "linear_epochs", "monitor_knn", "eval_bootstrap"):
        args += ["--option", f"{k}={json.dumps(tiny[k])}"]
    assert main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and KEYS <= set(json.loads(lines[0]))


def test_cli_compare_refuses_an_unknown_method_in_one_line(tiny, capsys):
    assert main(["compare", "supervised", "no_such_method", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "no_such_method" in err
    assert not (Path(os.environ["SSLBOOK_RUNS"])).exists()  # refused before anything trained
    assert main(["compare", "supervised", "--seeds", "0", "--no-progress"]) != 0
    assert main(["compare", "supervised", "--option", "seed=3", "--no-progress"]) != 0
    assert main(["compare", "supervised", "--option", "linear_epochs", "--no-progress"]) != 0
    assert main(["compare", "supervised", "--option", "linear_epochs=-1", "--no-progress"]) != 0
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 4 and all(e.startswith("error:") for e in errors)
    assert "--option expects KEY=VALUE" in errors[2] and "linear_epochs" in errors[3]


def test_cli_bn_refresh_on_train_and_eval(tiny, tmp_path, capsys):
    common = ["--preset", "tiny", "--backbone", "convnet_small", "--no-progress"]
    assert main(["train", "supervised", "--epochs", "1", "--bn-refresh", *common]) != 0  # epochs 0 only
    assert "--bn-refresh" in capsys.readouterr().err
    cfg = sslbook.config.resolve("supervised", "tiny", **{**tiny, "epochs": 0, "eval_protocols": ("knn",)})
    plain = sslbook.trainer.run(cfg).metrics
    out = str(tmp_path / "bn")
    refreshed = sslbook.trainer.run(dataclasses.replace(cfg, bn_refresh=True, out=out))
    assert refreshed.metrics != plain
    assert main(["eval", f"{out}/last.pt", "--bn-refresh"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["bn_refresh"] is True and line["bn_layers"] > 0
    assert line["knn_top1"] == pytest.approx(refreshed.metrics["knn_top1"])  # measuring again: the same statistics


def test_the_new_options_are_validated_and_an_older_checkpoint_keeps_its_metrics():
    from sslbook.config import ConfigError, TrainConfig, resolve
    from sslbook.trainer import _same_evaluation

    with pytest.raises(ConfigError, match=r"bn_refresh \(--bn-refresh\) must be used with epochs 0"):
        resolve("supervised", "tiny", bn_refresh=True)
    with pytest.raises(ConfigError, match="bn_refresh"):
        resolve("supervised", "tiny", epochs=0, bn_refresh="yes")
    with pytest.raises(ConfigError, match="eval_bootstrap"):
        resolve("supervised", "tiny", eval_bootstrap=1)
    assert resolve("supervised", "tiny", epochs=0, bn_refresh=True, eval_bootstrap=200).bn_refresh
    cfg = resolve("supervised", "tiny")
    saved = {k: v for k, v in cfg.to_dict().items() if k not in ("eval_bootstrap", "bn_refresh")}  # before them
    assert _same_evaluation(saved, cfg) and TrainConfig.from_dict(saved) == cfg
    assert not _same_evaluation(saved, dataclasses.replace(cfg, eval_bootstrap=100))


def test_metrics_with_more_bootstrap_resamples_serve_a_run_that_asks_for_fewer():
    """A chapter (no bootstrap) and compare (1000 resamples) read the same cached run without evaluating it in turns."""
    import dataclasses

    from sslbook.config import resolve
    from sslbook.trainer import _same_evaluation

    cfg = resolve("supervised", "tiny")
    with_boot = dataclasses.replace(cfg, eval_bootstrap=1000).to_dict()
    assert _same_evaluation(with_boot, cfg)  # stored with 1000, asked for none: reused
    assert _same_evaluation(with_boot, dataclasses.replace(cfg, eval_bootstrap=500))
    assert not _same_evaluation(cfg.to_dict(), dataclasses.replace(cfg, eval_bootstrap=1000))  # evaluated once more
    assert not _same_evaluation(with_boot, dataclasses.replace(cfg, linear_epochs=5))  # another evaluation still is not

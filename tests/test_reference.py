"""The ``long`` preset and the stored long reference runs (sslbook.reference)."""

import json
import os
from pathlib import Path

import pytest
import torch

from sslbook import reference
from sslbook.cli import main
from sslbook.config import LONG_FACTOR, RECIPES, resolve
from sslbook.data.base import DataInfo
from sslbook.methods import REGISTRY
from sslbook.trainer import train

STORED_LIMIT_BYTES = 25 * 2**20  # every stored run together


# ---------------------------------------------------------------- the long preset


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_long_is_the_tiny_recipe_trained_longer(method):
    tiny, long = resolve(method, "tiny"), resolve(method, "long")
    assert long.preset == "long" and long.epochs == LONG_FACTOR * tiny.epochs
    assert long.warmup_epochs == pytest.approx(LONG_FACTOR * tiny.warmup_epochs)
    for k in (
        "data",
        "data_kwargs",
        "backbone",
        "batch_size",
        "optimizer",
        "base_lr",
        "weight_decay",
        "label_fraction",
    ):
        assert getattr(long, k) == getattr(tiny, k), k
    own = RECIPES.get(method, {}).get("long", {}).get("method_kwargs", {})
    assert long.method_kwargs == {**tiny.method_kwargs, **own}
    assert 15 <= long.epochs / long.monitor_every <= 25  # about 20 points on the learning curve


def test_mixmatch_ramps_its_unlabelled_loss_over_the_whole_long_run_as_at_tiny():
    tiny, long = resolve("mixmatch", "tiny"), resolve("mixmatch", "long")
    assert long.method_kwargs["rampup_steps"] == LONG_FACTOR * tiny.method_kwargs["rampup_steps"]


def test_the_book_cannot_run_at_long():
    from sslbook.config import current_preset

    os.environ["SSLBOOK_PRESET"] = "long"
    try:
        with pytest.raises(ValueError, match="not a preset of the book"):
            current_preset()
    finally:
        del os.environ["SSLBOOK_PRESET"]


# ---------------------------------------------------------------- store and load


@pytest.fixture
def short_long_run(shapes_root, tmp_path, monkeypatch):
    """A long-preset run cut to a few steps on a small data set (a stand-in for a real one)."""
    monkeypatch.setenv("SSLBOOK_RUNS", str(tmp_path / "runs"))
    result = train(
        "rotnet",
        "long",
        epochs=2,
        batch_size=32,
        data_kwargs=dict(n_train=128, n_test=64, root=str(shapes_root)),
        linear_epochs=2,
        monitor_knn=64,
        monitor_every=1,
        out=str(tmp_path / "runs" / "long" / "rotnet"),
        progress=False,
    )
    info = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["info"]
    return result, DataInfo.from_dict(info)


def test_a_stored_run_loads_back_in_half_precision_with_its_curve_metrics_and_provenance(short_long_run, tmp_path):
    result, info = short_long_run
    where = tmp_path / "reference"
    f = reference.store(result, info, where, command="python -m sslbook reference rotnet")
    assert f == where / "long" / "rotnet" and reference.available(where) == ["rotnet"]
    state = torch.load(f / "backbone.pt", map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    run = reference.load("rotnet", where)
    trained = result.backbone.state_dict()
    for k, v in run.backbone.state_dict().items():
        assert v.dtype == trained[k].dtype
        assert torch.equal(v, trained[k].half().to(v.dtype)), k  # the weights, rounded to half precision
    assert not run.backbone.training
    assert run.curve == result.monitor and [c["epoch"] for c in run.curve] == [0, 1, 2]
    p = run.provenance
    assert p["command"] == "python -m sslbook reference rotnet" and p["steps"] == result.steps
    for k in ("sslbook_version", "git_commit", "hardware", "torch_version", "train_seconds", "stored_at"):
        assert p[k] not in (None, ""), k
    # the stored metrics are those of the stored weights: evaluating them again gives them back
    again = reference.evaluate(run, protocols=("knn",))
    assert again["knn_top1"] == pytest.approx(run.metrics["knn_top1"], abs=1e-6)
    assert set(run.metrics) >= {"knn_top1", "linear_top1"}
    # a short run is not the recipe: the differences are named
    differs = run.recipe_differences()
    assert differs["epochs"] == [2, resolve("rotnet", "long").epochs] and "batch_size" in differs


def test_loading_leaves_the_callers_random_numbers_alone(short_long_run, tmp_path):
    result, info = short_long_run
    reference.store(result, info, tmp_path / "ref")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    reference.load("rotnet", tmp_path / "ref")
    assert torch.equal(torch.rand(3), expected)


def test_a_missing_stored_run_names_the_folder_and_the_command(tmp_path):
    with pytest.raises(reference.ReferenceError, match=r"python -m sslbook reference simclr"):
        reference.load("simclr", tmp_path)


def test_only_long_runs_are_stored(shapes_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SSLBOOK_RUNS", str(tmp_path / "runs"))
    result = train(
        "rotnet", "tiny", max_steps=1, batch_size=16, data_kwargs=dict(n_train=64, n_test=32, root=str(shapes_root)),
        eval_protocols=(), monitor_knn=0, progress=False,
    )  # fmt: skip
    with pytest.raises(reference.ReferenceError, match="'long'"):
        reference.store(result, None, tmp_path / "ref")


def test_make_refuses_to_replace_a_run_stored_with_another_recipe(short_long_run, tmp_path, capsys):
    result, info = short_long_run
    where = tmp_path / "ref"
    reference.store(result, info, where)
    before = (where / "long" / "rotnet" / "run.json").read_bytes()
    assert main(["reference", "rotnet", "--store", str(where), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "delete that folder" in err and "today's recipe has" in err
    assert (where / "long" / "rotnet" / "run.json").read_bytes() == before
    assert main(["reference", "--list", "--store", str(where)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rotnet: 2 epochs") and "differs from its recipe in" in out


def test_reference_refuses_an_unknown_method_in_one_line(tmp_path, capsys):
    assert main(["reference", "no_such_method", "--store", str(tmp_path)]) == 2
    assert "unknown method 'no_such_method'" in capsys.readouterr().err


# ---------------------------------------------------------------- the runs stored in the repository


STORED = reference.available()


def test_the_repository_stores_long_runs_compactly():
    assert STORED, "no stored long runs in reference/long: make them with `python -m sslbook reference`"
    total = sum(p.stat().st_size for p in Path(reference.root()).rglob("*") if p.is_file())
    assert total <= STORED_LIMIT_BYTES, f"reference/ holds {total / 2**20:.1f} MB"


@pytest.mark.parametrize("method", STORED)
def test_every_stored_run_is_todays_long_recipe_with_its_provenance(method):
    run = reference.load(method)
    assert run.recipe_differences() == {}, f"{method}'s stored run is not today's long recipe"
    assert run.config.preset == "long" and run.curve[0]["epoch"] == 0 and run.curve[-1]["epoch"] == run.config.epochs
    assert all(0.0 <= c["knn_top1"] <= 1.0 for c in run.curve)
    p = run.provenance
    assert p["command"].startswith("python -m sslbook reference") and p["train_seconds"] > 0
    assert p["git_commit"] != "unknown" and p["hardware"] and p["torch_version"]
    json.dumps(run.metrics)


def test_a_stored_run_evaluates_to_its_stored_metric():
    """The cheapest stored run (fewest parameters), evaluated again with kNN on the full test set."""
    assert STORED
    runs = [reference.load(m) for m in STORED]
    run = min(runs, key=lambda r: sum(p.numel() for p in r.backbone.parameters()))
    again = reference.evaluate(run, protocols=("knn",))
    assert again["knn_top1"] == pytest.approx(run.metrics["knn_top1"], abs=0.005), run.method


def test_the_initial_backbone_is_the_runs_own_random_init(short_long_run, shapes_root, tmp_path):
    result, info = short_long_run
    reference.store(result, info, tmp_path / "ref")
    run = reference.load("rotnet", tmp_path / "ref")
    floor = train(
        "rotnet", "long", epochs=0, batch_size=32, data_kwargs=dict(n_train=128, n_test=64, root=str(shapes_root)),
        eval_protocols=(), monitor_knn=0, progress=False,
    )  # fmt: skip
    start = reference.initial_backbone(run).state_dict()
    assert all(torch.equal(v, start[k]) for k, v in floor.backbone.state_dict().items())
    assert not all(torch.equal(v, start[k]) for k, v in run.backbone.state_dict().items())

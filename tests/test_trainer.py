"""The trainer: exact resumption, NaN stop, safe checkpoints, schedules, the CLI contract."""

import json
import subprocess
import sys

import pytest
import torch

from sslbook import checkpoint as ckpt_io
from sslbook.config import resolve
from sslbook.methods import Method, register
from sslbook.methods.supervised import Supervised
from sslbook.schedules import cosine_schedule
from sslbook.trainer import NonFiniteLossError, load_trained, train


def _params(module):
    return torch.cat([p.detach().flatten() for p in module.state_dict().values() if p.is_floating_point()])


def test_resume_equals_uninterrupted(small, tmp_path):
    full = train("supervised", out=str(tmp_path / "a"), epochs=3, **{k: v for k, v in small.items() if k != "epochs"})

    class Interrupt(Exception):
        pass

    def stop_after_first(epoch, method, history):
        if epoch == 1:
            raise Interrupt

    cfg = {k: v for k, v in small.items() if k != "epochs"}
    with pytest.raises(Interrupt):
        train("supervised", out=str(tmp_path / "b"), epochs=3, callbacks=[stop_after_first], **cfg)
    interrupted = ckpt_io.load(tmp_path / "b" / "last.pt")
    assert interrupted["epoch"] == 1
    resumed = train("supervised", out=str(tmp_path / "b"), epochs=3, resume=True, **cfg)

    assert torch.equal(_params(full.method), _params(resumed.method))
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    assert full.metrics == resumed.metrics
    # the cost of training: steps and images seen are exact; the wall time of the first epoch survives the resume
    first_epoch_seconds = interrupted["train_seconds"]
    assert resumed.steps == full.steps == len(full.history) and full.images_seen == full.steps * full.config.batch_size
    assert 0 < first_epoch_seconds < resumed.train_seconds
    reloaded = load_trained(tmp_path / "b" / "last.pt")
    assert (reloaded.steps, reloaded.train_seconds) == (resumed.steps, resumed.train_seconds)


def test_knn_monitor_records_a_learning_curve_without_changing_training(small, tmp_path):
    cfg = {k: v for k, v in small.items() if k != "epochs"}
    plain = train("supervised", epochs=3, monitor_knn=0, **cfg)
    watched = train("supervised", out=str(tmp_path), epochs=3, monitor_knn=64, **cfg)
    # the monitor draws no random numbers: the same parameters and losses as without it
    assert torch.equal(_params(plain.method), _params(watched.method))
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in watched.history]
    assert plain.monitor == []
    curve = watched.monitor
    assert [m["epoch"] for m in curve] == [0, 1, 2, 3]  # epoch 0: the random initialisation
    steps_per_epoch = watched.steps // 3
    assert [m["step"] for m in curve] == [0, steps_per_epoch, 2 * steps_per_epoch, 3 * steps_per_epoch]
    assert [m["images"] for m in curve] == [m["step"] * watched.config.batch_size for m in curve]
    assert curve[0]["train_seconds"] == 0 and curve[-1]["train_seconds"] == pytest.approx(watched.train_seconds)
    assert all(0.0 <= m["knn_top1"] <= 1.0 for m in curve)
    # the curve is the kNN of the backbone at that moment: at the end, recompute it directly
    from sslbook.trainer import _Monitor

    assert _Monitor(watched.config)(watched.backbone) == pytest.approx(curve[-1]["knn_top1"])
    # the checkpoint keeps it, and a resumed (finished) run returns it unchanged
    assert load_trained(tmp_path / "last.pt").monitor == curve
    assert train("supervised", out=str(tmp_path), epochs=3, monitor_knn=64, resume=True, **cfg).monitor == curve


def test_a_speed_run_stops_at_its_knn_target_and_a_resumed_one_trains_no_further(small, tmp_path, capsys, monkeypatch):
    """``target_knn``: the kNN monitor (every ``monitor_every`` epochs, and after the last) stops the run once it
    reads the target; ``target_reached`` is that entry, its ``train_seconds`` the time to the target."""
    from sslbook.cli import main

    cfg = {k: v for k, v in small.items() if k != "epochs"}
    free = train(
        "supervised", epochs=4, monitor_knn=128, monitor_every=3, target_knn=1.0, **cfg
    )  # not reached here (a perfect score)
    assert [m["epoch"] for m in free.monitor] == [0, 3, 4] and free.target_reached is None
    assert all(m["eval_seconds"] > 0 for m in free.monitor)
    at_init, at_3 = free.monitor[0]["knn_top1"], free.monitor[1]["knn_top1"]
    assert at_3 > at_init  # so a target of at_3 is not met at the initialisation, and is met at epoch 3
    steps_per_epoch = free.steps // 4

    run = train("supervised", out=str(tmp_path), epochs=4, monitor_knn=128, monitor_every=3, target_knn=at_3, **cfg)
    assert run.steps == 3 * steps_per_epoch and [m["epoch"] for m in run.monitor] == [0, 3]
    assert run.target_reached == run.monitor[-1] and run.target_reached["knn_top1"] == pytest.approx(at_3)
    assert run.target_reached["train_seconds"] == pytest.approx(run.train_seconds)
    assert f"after epoch 3, {run.train_seconds:.1f} s of training: stopping" in capsys.readouterr().err
    assert ckpt_io.load(tmp_path / "last.pt")["epoch"] == 3
    again = train(
        "supervised", out=str(tmp_path), epochs=4, monitor_knn=128, monitor_every=3, target_knn=at_3, resume=True, **cfg
    )
    assert again.steps == run.steps and torch.equal(_params(again.method), _params(run.method))
    assert again.metrics == run.metrics and again.target_reached == run.target_reached
    # the CLI prints the time to the target in its JSON line; without the monitor a target is refused
    with pytest.raises(ValueError, match="monitor_knn"):
        train("supervised", epochs=1, monitor_knn=0, target_knn=0.5, **cfg)
    with pytest.raises(ValueError, match="monitor_every"):
        train("supervised", epochs=1, monitor_knn=64, monitor_every=0, **cfg)
    monkeypatch.setenv("SSLBOOK_DATA", small["data_kwargs"]["root"])
    assert (
        main(
            [
                "train",
                "supervised",
                "--epochs",
                "1",
                "--batch-size",
                "64",
                "--no-progress",
                "--target-knn",
                "0.0",
                "--backbone",
                "convnet_small",
            ]
        )
        == 0
    )
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["target_knn"] == 0.0 and last["target_reached"]["epoch"] == 0  # met at the initialisation: no training
    assert last["steps"] == 0 and last["train_seconds"] == 0


def test_the_speedrun_preset_names_its_protocol_and_only_methods_with_a_recipe_run_at_it(monkeypatch):
    from sslbook.config import SPEEDRUN_TARGET, current_preset

    c = resolve("simclr", "speedrun")
    assert (c.data, c.backbone, c.image_size, c.batch_size, c.knn_k) == ("cifar10", "resnet18_cifar", 32, 512, 200)
    assert c.target_knn == SPEEDRUN_TARGET == 0.90 and c.eval_protocols == ("knn",)
    assert c.monitor_knn >= 50000 and c.monitor_every >= 1  # the whole training set as the bank
    assert c.optimizer == "lars" and c.sync_bn
    with pytest.raises(ValueError, match="no 'speedrun' recipe.*simclr"):
        resolve("rotnet", "speedrun")
    monkeypatch.setenv("SSLBOOK_PRESET", "speedrun")
    with pytest.raises(ValueError, match="not a preset of the book"):
        current_preset()


class WithExtra(Supervised):
    """Supervised plus a method-specific measurement, counted so the test sees when it runs."""

    name = "extra_test"
    calls = 0

    def evaluate_extra(self):
        WithExtra.calls += 1
        return {"extra_score": 0.25}


def test_evaluate_extra_and_reuse_of_a_finished_run(small, tmp_path, monkeypatch):
    register("extra_test", WithExtra)
    first = train("extra_test", out=str(tmp_path), **small)
    assert first.metrics["extra_score"] == 0.25 and "knn_top1" in first.metrics and WithExtra.calls == 1

    import sslbook.trainer as trainer

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a finished, evaluated run must not be evaluated again")

    monkeypatch.setattr(trainer, "evaluate_backbone", no_evaluation)
    again = train("extra_test", out=str(tmp_path), resume=True, **small)
    assert again.metrics == first.metrics and WithExtra.calls == 1
    assert torch.equal(_params(first.method), _params(again.method))
    # other evaluation settings: the stored metrics do not apply, so it evaluates again
    with pytest.raises(AssertionError, match="must not be evaluated"):
        train("extra_test", out=str(tmp_path), resume=True, **{**small, "knn_k": 3})


def test_resume_refuses_other_settings(small, tmp_path):
    train("supervised", out=str(tmp_path), **small)
    with pytest.raises(ValueError, match="backbone"):
        train("supervised", out=str(tmp_path), resume=True, **{**small, "backbone": "convnet"})


def bad_loss(value: float, call: int) -> type:
    """Supervised, except that the loss is multiplied by ``value`` (nan, inf) at its ``call``-th forward pass."""

    class BadLoss(Supervised):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("calls", torch.zeros((), dtype=torch.long))

        def forward(self, views, labels):
            out = super().forward(views, labels)
            self.calls += 1
            if int(self.calls) == call:
                out["loss"] = out["loss"] * value
            return out

    return BadLoss


def test_nan_loss_stops_naming_the_step(small, tmp_path):
    register("nan_test", bad_loss(float("nan"), call=4))  # the fourth step (the history's step 4)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 4 \(epoch 1\)"):
        train("nan_test", out=str(tmp_path), **small)


def test_register_refuses_non_methods():
    with pytest.raises(TypeError):
        register("bad", dict)


def test_checkpoint_is_weights_only_and_atomic(small, tmp_path):
    result = train("supervised", out=str(tmp_path), **small)
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # raises if anything but plain data is inside
    assert state["format"] == ckpt_io.FORMAT and state["epoch"] == small["epochs"]
    assert state["metrics"]["knn_top1"] == result.metrics["knn_top1"]
    assert state["config"]["method"] == "supervised"
    assert not list(tmp_path.glob("*.tmp"))
    again = load_trained(tmp_path / "last.pt")
    assert torch.equal(_params(again.method), _params(result.method))


def test_interrupted_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    ckpt_io.save_atomic({"format": ckpt_io.FORMAT, "x": torch.ones(3)}, path)

    class Boom:
        def __reduce__(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt_io.save_atomic({"format": ckpt_io.FORMAT, "x": Boom()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ckpt_io.CheckpointError, match="not found"):
        ckpt_io.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt_io.CheckpointError, match="cannot read"):
        ckpt_io.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="not an sslbook checkpoint"):
        ckpt_io.load(tmp_path / "other.pt")


def test_max_steps_and_schedule(small):
    result = train("supervised", max_steps=3, **small)
    assert [h["step"] for h in result.history] == [1, 2, 3]
    lr = cosine_schedule(1.0, 0.0, total_steps=10, warmup_steps=2)
    assert len(lr) == 10 and lr[1] == pytest.approx(1.0) and lr[0] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lr[1:].tolist(), lr[2:].tolist())) and lr[-1] > 0


def test_resolve_merges_preset_recipe_overrides():
    cfg = resolve("supervised", "tiny", epochs=7, batch_size=None)
    assert cfg.epochs == 7 and cfg.batch_size == 256 and cfg.data == "shapes"
    full = resolve("supervised", "full")
    assert full.data == "cifar10" and full.backbone == "resnet18_cifar"
    assert resolve("supervised", "tiny", data="cifar10").data_kwargs == {}
    with pytest.raises(ValueError, match="unknown training options"):
        resolve("supervised", "tiny", no_such_option=1)
    with pytest.raises(ValueError, match="unknown preset"):
        resolve("supervised", "huge")


def test_supervised_learns(small, shapes_root):
    """A sanity check of the whole loop: supervised training beats its own random init."""
    cfg = {**small, "data_kwargs": dict(n_train=1000, n_test=300, root=str(shapes_root))}
    cfg.pop("epochs")
    base = train("supervised", epochs=0, **cfg)
    trained = train("supervised", epochs=5, **cfg)
    assert trained.metrics["knn_top1"] > base.metrics["knn_top1"] + 0.1


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "sslbook", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_cli_list():
    out = _cli("list")
    assert out.returncode == 0 and "supervised" in out.stdout.split()


def test_cli_train_prints_json_last_line(shapes_root, tmp_path, monkeypatch):
    import os

    env = {**os.environ, "SSLBOOK_DATA": str(shapes_root)}
    # The tiny preset's own data-set size; the data is generated once and cached under shapes_root.
    out = _cli("train", "supervised", "--epochs", "0", "--out", str(tmp_path), "--no-progress", env=env)
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["method"] == "supervised" and last["epochs"] == 0
    assert 0 <= last["knn_top1"] <= 1 and 0 <= last["linear_top1"] <= 1
    ev = _cli("eval", str(tmp_path / "last.pt"), "--protocol", "knn", env=env)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout.strip().splitlines()[-1])["knn_top1"] == pytest.approx(last["knn_top1"])


def test_cli_bad_inputs(tmp_path):
    import os

    env = {**os.environ, "SSLBOOK_DATA": str(tmp_path)}
    out = _cli("train", "supervised", "--data", "cifar10", "--epochs", "0", env=env)
    assert out.returncode == 2
    assert "cifar-10-batches-py" in out.stderr and "--download" in out.stderr and "Traceback" not in out.stderr
    out = _cli("train", "no_such_method", env=env)
    assert out.returncode == 2 and "error: method must be one of" in out.stderr and "no_such_method" in out.stderr
    out = _cli("eval", str(tmp_path / "nothing.pt"), env=env)
    assert out.returncode == 2 and "checkpoint not found" in out.stderr


class MultiCropToy(Method):
    """Views of two sizes (one 32 px global crop, two 16 px local crops), as multi-crop methods make."""

    name = "multicrop_toy"

    def __init__(self, backbone, info, image_size):
        super().__init__(backbone, info, image_size)
        self.head = torch.nn.Linear(backbone.out_dim, 8)

    @torch.no_grad()
    def make_views(self, images, labels):
        from sslbook.augment import random_resized_crop

        return [random_resized_crop(images, 32, (0.4, 1.0))] + [
            random_resized_crop(images, 16, (0.05, 0.4)) for _ in range(2)
        ]

    def forward(self, views, labels):
        outs = [self.head(self.backbone(v)) for v in views]
        loss = sum((o - outs[0].detach()).pow(2).mean() for o in outs[1:]) + outs[0].pow(2).mean()
        return {"loss": loss, "sizes": torch.tensor(float(sum(v.shape[-1] for v in views)))}


@pytest.mark.parametrize("augment_on,workers", [("device", 0), ("loader", 0), ("loader", 2)])
def test_views_of_different_sizes_on_device_or_in_workers(small, augment_on, workers):
    register("multicrop_toy", MultiCropToy)
    result = train("multicrop_toy", max_steps=2, augment_on=augment_on, **{**small, "num_workers": workers})
    assert [h["sizes"] for h in result.history] == [64.0, 64.0]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)


class IndexToy(Supervised):
    """Supervised, plus a buffer that counts which training images it was handed, by data-set index."""

    name = "index_toy"
    needs_indices = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("seen", torch.zeros(256, dtype=torch.long))

    label_table: torch.Tensor  # the training set's labels by index, set by the test

    @torch.no_grad()
    def make_views(self, images, labels, indices=None):
        assert indices is not None and indices.shape == labels.shape
        assert torch.equal(IndexToy.label_table[indices.cpu()], labels.cpu())  # each image came with its own index
        self.seen.index_add_(0, indices.to(self.seen.device), torch.ones_like(indices).to(self.seen.device))
        return super().make_views(images, labels)


@pytest.mark.parametrize("augment_on", ["device", "loader"])
def test_methods_that_need_indices_get_each_images_index(small, augment_on):
    from sslbook.data import load_dataset

    train_set = load_dataset("shapes", "train", **small["data_kwargs"])
    IndexToy.label_table = torch.tensor([int(train_set[i][1]) for i in range(len(train_set))])
    register("index_toy", IndexToy)
    result = train(
        "index_toy",
        epochs=1,
        batch_size=32,
        augment_on=augment_on,
        **{k: v for k, v in small.items() if k not in ("epochs", "batch_size")},
    )
    if augment_on == "device":  # views made in the training process: the method's buffer saw every index once
        assert result.method.seen.tolist() == [1] * 256


def test_cli_eval_protocols_in_process(small, tmp_path, capsys):
    from sslbook.cli import main

    train("supervised", out=str(tmp_path), **small)
    for protocol, key in [("kmeans", "nmi"), ("linear", "linear_top1"), ("finetune", "finetune_top1")]:
        assert main(["eval", str(tmp_path / "last.pt"), "--protocol", protocol, "--epochs", "2"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert 0 <= out[key] <= 1 and out["protocol"] == protocol

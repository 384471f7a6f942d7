"""Refusals, run folders that are never lost or shared, clean stops on signals, finite checkpoints, the
class-balanced kNN monitor and data files that cannot run code. Each case prints one ``error:`` line."""

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sslbook import checkpoint as ckpt_io
from sslbook.cli import main
from sslbook.config import ConfigError, resolve
from sslbook.data import DataError, load_dataset
from sslbook.methods import register
from sslbook.methods.supervised import Supervised
from sslbook.trainer import NonFiniteLossError, balanced_sample, train

REPO = Path(__file__).resolve().parents[1]


def _params(module):
    return torch.cat([p.detach().flatten() for p in module.state_dict().values() if p.is_floating_point()])


def _cli_args(small):
    """The `small` fixture as command-line options of `train` (data from $SSLBOOK_DATA)."""
    return ["--backbone", small["backbone"], "--batch-size", str(small["batch_size"]), "--no-progress"]


@pytest.fixture
def cli_env(small, monkeypatch):
    monkeypatch.setenv("SSLBOOK_DATA", small["data_kwargs"]["root"])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


# ------------------------------------------------------------------------------------------ refused settings
@pytest.mark.parametrize(
    "args, names",
    [
        (["--grad-clip", "-1"], "--grad-clip"),
        (["--grad-clip", "0"], "--grad-clip"),
        (["--epochs", "-1"], "--epochs"),
        (["--max-steps", "-5"], "--max-steps"),
        (["--max-steps", "0"], "--max-steps"),
        (["--target-knn", "2"], "--target-knn"),
        (["--lr", "-0.1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--batch-size", "0"], "--batch-size"),
        (["--seed", "-3"], "--seed"),
        (["--workers", "-1"], "--workers"),
        (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--set", "temperature=Infinity"], "--set temperature"),
        (["--set", "temperature=inf"], "--set temperature"),
        (["--set", "temperature=nan"], "--set temperature"),
        (["--set", "temperature=NaN"], "--set temperature"),
        (["--set", "temperature=warm"], "--set temperature"),
        (["--set", "bogus=1"], "--set bogus"),
        (["--set", "crop_scale=0.5"], "--set crop_scale"),
        (["--set", "novalue"], "--set"),
    ],
)
def test_impossible_settings_are_refused_in_one_line_before_anything_is_built(args, names, capsys, monkeypatch):
    import sslbook.trainer as trainer

    monkeypatch.setattr(trainer, "setup", lambda *a, **k: pytest.fail("setup ran before the settings were checked"))
    assert main(["train", "simclr", *args]) == 2
    line = _error_line(capsys)
    assert line.startswith("error: ") and names in line, line


def test_the_python_api_validates_in_the_same_place(small):
    with pytest.raises(ConfigError, match="grad_clip"):
        train("supervised", grad_clip=-1.0, **small)
    with pytest.raises(ConfigError, match="epochs"):
        resolve("supervised", epochs=-1)
    with pytest.raises(ConfigError, match="unknown training options: bogus"):
        resolve("supervised", bogus=1)
    with pytest.raises(ConfigError, match="--set temperature must be a finite number"):
        resolve("simclr", method_kwargs={"temperature": float("inf")})
    with pytest.raises(ConfigError, match="--resume continues the run, --overwrite replaces it"):
        resolve("supervised", resume=True, overwrite=True)
    assert resolve("supervised", epochs=0).epochs == 0  # the random-init baseline stays allowed
    # a switch may also take a named mode (DINO's centering=False | True | "sinkhorn")
    assert resolve("dino", method_kwargs={"centering": "sinkhorn"}).method_kwargs["centering"] == "sinkhorn"
    with pytest.raises(ConfigError, match="--set centering must be true or false"):
        resolve("dino", method_kwargs={"centering": 1})


def test_a_data_set_with_one_class_is_refused(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / split / "only").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / split / "only" / f"{i}.png")
    assert (
        main(
            [
                "train",
                "supervised",
                "--data",
                f"folder:{tmp_path}",
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--backbone",
                "convnet_small",
                "--no-progress",
            ]
        )
        == 2
    )
    line = _error_line(capsys)
    assert "1 class" in line and "at least 2" in line


def test_folder_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve("supervised", data="folder:pics")
    assert cfg.data == f"folder:{tmp_path.resolve() / 'pics'}"


def test_a_checkpoint_with_the_format_tag_but_missing_keys_is_refused_by_eval_and_resume(
    small, tmp_path, cli_env, capsys
):
    ckpt_io.save_atomic({"format": ckpt_io.FORMAT, "method": {}}, tmp_path / "last.pt")
    assert main(["eval", str(tmp_path / "last.pt")]) == 2
    line = _error_line(capsys)
    assert "without 'config'" in line and "damaged" in line
    assert main(["train", "supervised", "--out", str(tmp_path), "--resume", "--epochs", "1", *_cli_args(small)]) == 2
    assert "without 'config'" in _error_line(capsys)


# ------------------------------------------------------------------------------------------ run folders
def test_a_finished_run_is_not_replaced_without_overwrite(small, tmp_path, cli_env, capsys):
    args = ["train", "supervised", "--out", str(tmp_path), "--epochs", "1", "--max-steps", "2", *_cli_args(small)]
    assert main(args) == 0
    first = ckpt_io.load(tmp_path / "last.pt")
    capsys.readouterr()
    assert main(args) == 2
    line = _error_line(capsys)
    assert "already holds a supervised run" in line and "--resume" in line and "--overwrite" in line
    assert torch.equal(ckpt_io.load(tmp_path / "last.pt")["rng"]["torch"], first["rng"]["torch"])
    assert main([*args, "--overwrite"]) == 0


def test_two_runs_on_one_folder_the_second_is_refused_naming_the_holder(small, tmp_path, cli_env, capsys):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from sslbook.checkpoint import RunLock; RunLock(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "supervised", "--out", str(tmp_path), "--epochs", "1", *_cli_args(small)]) == 2
        line = _error_line(capsys)
        assert "in use by another run" in line and f"pid {holder.pid}" in line
        assert not (tmp_path / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock: the folder is usable again
    assert (
        main(["train", "supervised", "--out", str(tmp_path), "--epochs", "1", "--max-steps", "1", *_cli_args(small)])
        == 0
    )


def test_a_resume_that_changes_the_run_is_refused_and_allowed_changes_are_recorded(small, tmp_path):
    cfg = {k: v for k, v in small.items() if k != "epochs"}
    train("supervised", out=str(tmp_path), epochs=1, **cfg)
    for change in (dict(seed=1), dict(base_lr=0.5), dict(weight_decay=0.0), dict(optimizer="adamw")):
        key = next(iter(change))
        with pytest.raises(ConfigError, match=f"trained with {key}=.*a resume may change only"):
            train("supervised", out=str(tmp_path), epochs=2, resume=True, **cfg, **change)
    assert ckpt_io.load(tmp_path / "last.pt")["epoch"] == 1  # untouched by the refusals
    longer = train("supervised", out=str(tmp_path), epochs=2, resume=True, **cfg)
    assert longer.config.epochs == 2 and longer.config.seed == 0
    changes = ckpt_io.load(tmp_path / "last.pt")["changes"]
    assert len(changes) == 1 and changes[0]["epoch"] == 1 and changes[0]["changes"] == {"epochs": [1, 2]}


def _fail_on_probe(monkeypatch, errno_value, text):
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*a, prefix="", **k):
        if prefix.startswith(".write-test"):
            raise OSError(errno_value, text)
        return real(*a, prefix=prefix, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_out_problems_are_found_before_training(small, tmp_path, cli_env, capsys, monkeypatch):
    import errno

    import sslbook.trainer as trainer

    monkeypatch.setattr(trainer, "setup", lambda *a, **k: pytest.fail("training started before --out was checked"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, expected in ((a_file, "is a file, not a folder"), (a_file / "sub", "cannot hold the run's checkpoints")):
        assert main(["train", "supervised", "--out", str(out), "--epochs", "1", *_cli_args(small)]) == 2
        assert expected in _error_line(capsys)
    # a folder without write permission (root ignores modes, so the write probe is made to fail as it would)
    _fail_on_probe(monkeypatch, errno.EACCES, "Permission denied")
    assert main(["train", "supervised", "--out", str(tmp_path / "ro"), "--epochs", "1", *_cli_args(small)]) == 2
    assert "Permission denied" in _error_line(capsys)


def test_a_failed_save_says_so_and_keeps_the_previous_checkpoint(small, tmp_path, monkeypatch):
    import errno

    saves = []
    real_save = torch.save

    def save(obj, f, *a, **k):
        saves.append(1)
        if len(saves) == 2:  # the second epoch's checkpoint: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(
        ckpt_io.CheckpointError, match=r"No space left on device.*previous checkpoint \(step 4\) is intact"
    ):
        train("supervised", out=str(tmp_path), **small)  # 4 steps an epoch
    assert ckpt_io.load(tmp_path / "last.pt")["step"] == 4 and not list(tmp_path.glob("*.tmp"))


def test_stale_temporary_files_are_removed_when_a_run_starts(small, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / "last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    train("supervised", out=str(tmp_path), max_steps=1, **small)
    assert not stale.exists() and (tmp_path / "last.pt").is_file()


class _BlowsUpBatchNorm(Supervised):
    """Supervised training whose BatchNorm statistics become infinite at the 6th step (the 2nd epoch), while
    the loss (computed with the batch's own statistics) stays finite: only the checkpoint would show it."""

    name = "blows_up_bn"

    def on_step_end(self, step, total_steps):
        if step == 5:
            bn = next(m for m in self.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))
        return super().on_step_end(step, total_steps)


def test_only_finite_checkpoints_are_written(small, tmp_path):
    register("blows_up_bn", _BlowsUpBatchNorm)
    with pytest.raises(
        NonFiniteLossError,
        match=r"running_var is not finite after step 8.*last finite checkpoint is "
        r".*last\.pt \(step 4\)",
    ):
        train("blows_up_bn", out=str(tmp_path), **small)
    state = ckpt_io.load(tmp_path / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------ signals
_SIGNAL_SCRIPT = textwrap.dedent('''
    import os, signal, sys
    from sslbook.cli import main
    from sslbook.methods import register
    from sslbook.methods.supervised import Supervised

    SIG, AT = getattr(signal, sys.argv[1]) if sys.argv[1] != "none" else None, int(sys.argv[2])

    class SignalsItself(Supervised):
        """Supervised; sends itself SIG after the step AT (0-based), as Ctrl-C or a scheduler would."""
        name = "signals_itself"

        def on_step_end(self, step, total_steps):
            if SIG is not None and step == AT:
                os.kill(os.getpid(), SIG)
            return super().on_step_end(step, total_steps)

    register("signals_itself", SignalsItself)
    sys.exit(main(["train", "signals_itself", *sys.argv[3:]]))
''')


def _signal_run(tmp_path, small, sig, at, *args):
    script = tmp_path / "signal_run.py"
    script.write_text(_SIGNAL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SSLBOOK_DATA": small["data_kwargs"]["root"], "OMP_NUM_THREADS": "1"}
    # the preset's shapes set ($SSLBOOK_DATA): 8 steps, all inside the first epoch
    return subprocess.run(
        [sys.executable, str(script), sig, str(at), "--epochs", "1", "--max-steps", "8", *_cli_args(small), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_saves_then_stops_in_one_line_and_the_resumed_run_equals_an_uninterrupted_one(
    small, tmp_path, sig, code
):
    whole = _signal_run(tmp_path, small, "none", 0, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "stopped"
    stopped = _signal_run(tmp_path, small, sig, 5, "--out", str(out))  # after the 6th of 8 steps
    assert stopped.returncode == code, stopped.stderr
    lines = stopped.stderr.strip().splitlines()
    assert "Traceback" not in stopped.stderr and len(lines) == 1, stopped.stderr
    assert lines[0].startswith(f"{sig}: stopped signals_itself at step 6 (epoch 1/1)") and "--resume" in lines[0]
    assert str(out / "last.pt") in lines[0]
    assert ckpt_io.load(out / "last.pt")["step"] == 6
    resumed = _signal_run(tmp_path, small, "none", 0, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = ckpt_io.load(tmp_path / "whole" / "last.pt"), ckpt_io.load(out / "last.pt")
    assert a["step"] == b["step"] == 8
    for k, v in a["method"].items():  # bit for bit
        assert torch.equal(v, b["method"][k]), k
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["knn_top1"] == a["metrics"]["knn_top1"]


def test_checkpoint_every_n_steps_resumes_inside_an_epoch_exactly(small, tmp_path):
    cfg = {k: v for k, v in small.items() if k != "epochs"}
    whole = train("supervised", out=str(tmp_path / "a"), epochs=2, **cfg)

    class Killed(Exception):
        pass

    # a run killed after step 6: the last checkpoint is the one of step 6 (checkpoint_every=3), inside epoch 2
    register(
        "killed_at_7",
        type(
            "KilledAt7",
            (Supervised,),
            {
                "on_step_end": lambda self, step, total: (
                    (_ for _ in ()).throw(Killed()) if step == 6 else Supervised.on_step_end(self, step, total)
                )
            },
        ),
    )
    with pytest.raises(Killed):
        train("killed_at_7", out=str(tmp_path / "b"), epochs=2, checkpoint_every=3, **cfg)
    state = ckpt_io.load(tmp_path / "b" / "last.pt")
    assert (state["epoch"], state["step"]) == (1, 6)
    # resumed as plain supervised training from that checkpoint (same weights and optimiser state)
    ckpt = tmp_path / "b" / "last.pt"
    state["config"]["method"] = "supervised"
    ckpt_io.save_atomic(state, ckpt)
    resumed = train("supervised", out=str(tmp_path / "b"), epochs=2, checkpoint_every=3, resume=True, **cfg)
    assert resumed.steps == whole.steps == 8
    assert torch.equal(_params(whole.method), _params(resumed.method))
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]


# ------------------------------------------------------------------------------------------ the kNN monitor
def test_the_monitor_sample_is_class_balanced_on_a_class_ordered_data_set():
    labels = torch.arange(10).repeat_interleave(100)  # class by class, as an image folder lists them
    index = balanced_sample(labels, 200)
    assert len(index) == 200 and torch.equal(index, index.sort().values)
    assert torch.bincount(labels[index], minlength=10).tolist() == [20] * 10
    assert torch.equal(index, balanced_sample(labels, 200))  # fixed: the same sample every time
    assert len(balanced_sample(labels, 5000)) == 1000  # more than there are: all of them
    uneven = torch.cat([torch.zeros(5, dtype=torch.long), torch.ones(100, dtype=torch.long), torch.full((3,), -1)])
    counts = torch.bincount(uneven[balanced_sample(uneven, 20)]).tolist()
    assert counts == [5, 15]  # the small class whole, the rest from the other; unlabelled items never


def test_the_monitor_of_a_folder_data_set_sees_every_class(tmp_path):
    from PIL import Image

    from sslbook.trainer import _Monitor

    for split in ("train", "val"):
        for c in range(5):
            (tmp_path / split / f"c{c}").mkdir(parents=True)
            for i in range(8):
                Image.fromarray(np.full((8, 8, 3), 10 * c + i, np.uint8)).save(tmp_path / split / f"c{c}" / f"{i}.png")
    cfg = resolve("supervised", data=f"folder:{tmp_path}", image_size=8, monitor_knn=10)
    monitor = _Monitor(cfg)
    train_labels = [monitor.train_set[i][1] for i in range(len(monitor.train_set))]
    test_labels = [monitor.test_set[i][1] for i in range(len(monitor.test_set))]
    assert sorted(train_labels) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and sorted(test_labels) == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------------------ pickles
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_batch_is_refused_without_running_its_payload(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "payload-ran"
    rng = np.random.default_rng(0)
    for f in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        obj = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        if f == "data_batch_3":
            obj[b"batch_label"] = _Payload(marker)
        with open(folder / f, "wb") as fh:
            pickle.dump(obj, fh)
    with pytest.raises(DataError, match=r"data_batch_3.*asks for posix\.system.*refusing"):
        load_dataset("cifar10", "train", root=tmp_path)
    assert not marker.exists()
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 4  # the honest batches still load


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_restricted_unpickler_reads_numpy_arrays_of_every_protocol(protocol):
    import io

    from sslbook.data.real import safe_unpickle

    data = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [1, 2, 3], b"batch_label": "b 1"}
    back = safe_unpickle(io.BytesIO(pickle.dumps(data, protocol=protocol)))
    assert np.array_equal(back[b"data"], data[b"data"]) and back[b"labels"] == [1, 2, 3]

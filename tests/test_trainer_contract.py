"""The trainer's promises the trainer tests leave implicit: the progress bar shows the loss and images/s,
an infinite loss stops the run as a NaN does and leaves the last good checkpoint readable, and one
environment variable switches the whole book's preset."""

import pytest
import torch
from test_trainer import bad_loss

from sslbook import checkpoint as ckpt_io
from sslbook.config import current_preset, resolve
from sslbook.methods import register
from sslbook.trainer import NonFiniteLossError, load_trained, train


def test_progress_bar_shows_loss_and_images_per_second(small, capsys):
    train("supervised", **{**small, "progress": True, "max_steps": 2, "log_every": 1})
    err = capsys.readouterr().err
    assert "supervised epoch 1/" in err and "loss=" in err and "img_s=" in err, err[-500:]


def test_infinite_loss_stops_naming_the_step_and_the_last_good_checkpoint(small, tmp_path):
    register("inf_test", bad_loss(float("inf"), call=6))  # the sixth step, in the second epoch
    with pytest.raises(
        NonFiniteLossError, match=r"loss is inf at step 6 \(epoch 2\).*last good checkpoint is .*last\.pt \(step 4"
    ):
        train("inf_test", out=str(tmp_path), **small)  # 256 images / batch 64: 4 steps an epoch
    state = ckpt_io.load(tmp_path / "last.pt")  # epoch 1's checkpoint, intact
    assert state["epoch"] == 1 and state["step"] == 4 and not list(tmp_path.glob("*.tmp"))
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())
    load_trained(tmp_path / "last.pt")


def test_one_environment_variable_switches_the_preset(monkeypatch):
    monkeypatch.delenv("SSLBOOK_PRESET", raising=False)
    assert current_preset() == "tiny" and resolve("simclr").preset == "tiny" and resolve("simclr").data == "shapes"
    monkeypatch.setenv("SSLBOOK_PRESET", "full")
    cfg = resolve("simclr")
    assert current_preset() == "full" and cfg.preset == "full" and cfg.data != "shapes"
    assert cfg.epochs > resolve("simclr", "tiny").epochs
    monkeypatch.setenv("SSLBOOK_PRESET", "huge")
    with pytest.raises(ValueError, match="SSLBOOK_PRESET='huge' is not a preset"):
        current_preset()

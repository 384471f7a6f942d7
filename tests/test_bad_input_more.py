"""Bad input the issues name that the method tests did not cover: temperatures ≤ 0 at the losses, image
sizes a method cannot mask or decode (with the size it needs), grayscale and corrupt video frames, and
``eval --download`` fetching before it reads."""

import numpy as np
import pytest
import torch

from sslbook.data import DataError
from sslbook.data.base import DataInfo
from sslbook.losses import info_nce, nt_xent
from sslbook.methods import get_method
from sslbook.models import build_backbone

INFO = DataInfo("t", [str(i) for i in range(4)], 32, (0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("t", [0.0, -0.5, float("nan")])
def test_contrastive_losses_refuse_a_temperature_that_is_not_positive(t):
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match="nt_xent needs a temperature > 0"):
        nt_xent(z, z, t)
    with pytest.raises(ValueError, match="info_nce needs a temperature > 0"):
        info_nce(z, z, None, t)
    with pytest.raises(ValueError, match="info_nce needs a temperature > 0"):
        info_nce(z, z, torch.randn(16, 8), t)


def _context_encoder(size):
    torch.manual_seed(0)
    return get_method("context_encoder")(build_backbone("convnet_small", INFO), INFO, size)


def test_context_encoder_names_the_image_sizes_it_can_decode():
    with pytest.raises(ValueError, match=r"36×36.*use image size 32×32 or 40×40"):
        _context_encoder(36)
    with pytest.raises(ValueError, match=r"use image size 16×16 or 24×24"):
        _context_encoder(20)
    for size in (16, 32, 40):  # the sizes it names do work
        m = _context_encoder(size)
        x, masks = m.make_views(torch.rand(2, 3, size, size), None)
        assert m.inpaint(x, masks)[0].shape == (2, 3, size, size)


def test_video_colorization_names_the_video_size_it_needs():
    with pytest.raises(ValueError, match="raise video_size to at least 16"):
        get_method("video_colorization")(build_backbone("convnet_small", INFO), INFO, 32, video_size=8)
    get_method("video_colorization")(build_backbone("convnet_small", INFO), INFO, 32, video_size=16, clip_batch=2)


def _video_folder(root, grey=False, videos=2, frames=3, size=20):
    from PIL import Image

    rng = np.random.default_rng(0)
    for v in range(videos):
        (root / f"clip{v}").mkdir(parents=True)
        for t in range(frames):
            arr = rng.integers(0, 256, (size, size, 1 if grey else 3), dtype=np.uint8)
            if grey:
                arr = np.repeat(arr, 3, axis=2)
            Image.fromarray(arr).save(root / f"clip{v}" / f"{t:03d}.png")
    return root


def test_video_colorization_trains_on_a_folder_of_real_frames(tmp_path):
    folder = _video_folder(tmp_path / "videos")
    torch.manual_seed(0)
    m = get_method("video_colorization")(
        build_backbone("convnet_small", INFO), INFO, 32, video_size=32, clip_batch=3, video_folder=str(folder)
    )
    views = m.make_views(torch.rand(3, 3, 32, 32), None)
    assert views[0].shape == (3, 2, 3, 32, 32)  # 3 clips of a reference and a target frame from the folder
    out = m(views, None)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()


def test_video_colorization_refuses_grayscale_video(tmp_path):
    folder = _video_folder(tmp_path / "grey", grey=True)
    m = get_method("video_colorization")(
        build_backbone("convnet_small", INFO), INFO, 32, video_size=32, clip_batch=2, video_folder=str(folder)
    )
    with pytest.raises(ValueError, match="video_colorization is a colorization method and needs colour images"):
        m.make_views(torch.rand(2, 3, 32, 32), None)


def test_corrupt_and_missing_video_frames_are_named(tmp_path):
    from sslbook.data.video import FrameFolder

    folder = _video_folder(tmp_path / "videos", videos=1)
    (folder / "clip0" / "001.png").write_bytes(b"\x89PNG not really")
    video = FrameFolder(folder, 16)
    with pytest.raises(DataError, match=r"cannot read video frame .*001\.png"):
        video.clip(0, times=[0, 1])
    with pytest.raises(DataError, match="holds no video"):
        FrameFolder(tmp_path / "nowhere", 16)


def test_eval_download_fetches_before_it_reads(tmp_path, monkeypatch, capsys):
    """`eval CKPT --data cifar10 --download` must download before loading the evaluation sets."""
    import sslbook.data as data
    import sslbook.trainer as trainer
    from sslbook.cli import main

    trainer.train(
        "supervised",
        out=str(tmp_path / "run"),
        preset="tiny",
        backbone="convnet_small",
        batch_size=32,
        epochs=0,
        data_kwargs=dict(n_train=64, n_test=32, root=str(tmp_path / "data")),
        eval_protocols=("knn",),
        progress=False,
    )
    events = []
    real_eval_sets = trainer.eval_sets

    def fake_load(name, split, download=False, **kwargs):
        events.append(("download" if download else "load", name, split))
        raise DataError("stop here")  # nothing to fetch offline: what matters is the order

    monkeypatch.setattr(data, "load_dataset", fake_load)
    monkeypatch.setattr(trainer, "eval_sets", lambda cfg: events.append(("eval_sets", cfg.data)) or real_eval_sets(cfg))
    assert main(["eval", str(tmp_path / "run" / "last.pt"), "--data", "cifar10", "--download"]) == 2
    assert events[0] == ("download", "cifar10", "train"), events
    assert "stop here" in capsys.readouterr().err


def test_damaged_stl10_files_are_named(tmp_path):
    from sslbook.data import load_dataset

    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    img = np.zeros((3, 3, 96, 96), dtype=np.uint8)
    img.tofile(folder / "train_X.bin")
    np.array([1, 2], dtype=np.uint8).tofile(folder / "train_y.bin")  # one label short
    with pytest.raises(DataError, match=r"train_y\.bin holds 2 labels for the 3 images"):
        load_dataset("stl10", "train", root=tmp_path)
    with open(folder / "unlabeled_X.bin", "wb") as f:
        f.write(img.tobytes() + b"\x00" * 100)  # an interrupted download
    with pytest.raises(DataError, match=r"unlabeled_X\.bin is truncated"):
        load_dataset("stl10", "unlabeled", root=tmp_path)

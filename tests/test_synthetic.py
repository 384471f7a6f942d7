"""The generated shapes data set: determinism, shapes, labels, caching, bad input."""

import pytest
import torch

from sslbook.data import DataError, load_dataset
from sslbook.data.synthetic import CLASSES, generate, load_shapes


def test_deterministic_and_seeded():
    a, la = generate(64, seed=3)
    b, lb = generate(64, seed=3)
    c, _ = generate(64, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)


def test_shapes_dtypes_balanced_labels():
    x, y = generate(200, seed=0, image_size=32)
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y.min() >= 0 and y.max() < len(CLASSES)
    assert torch.bincount(y, minlength=10).tolist() == [20] * 10
    assert x.float().std() > 20  # real pictures, not a constant
    big, _ = generate(10, seed=0, image_size=64)
    assert big.shape == (10, 3, 64, 64)


def test_scenes_are_upright_on_average():
    """Light from above: the top rows are brighter than the bottom rows (what rotation prediction uses)."""
    x, _ = generate(300, seed=1)
    rows = x.float().mean(dim=(0, 1, 3))
    assert rows[:8].mean() > rows[-8:].mean() + 15


def test_splits_differ_and_share_statistics(tmp_path):
    train = load_shapes("train", tmp_path, n_train=100, n_test=50)
    test = load_shapes("test", tmp_path, n_train=100, n_test=50)
    assert len(train) == 100 and len(test) == 50
    assert train.info.mean == test.info.mean and train.info.classes == CLASSES
    flat_train = {bytes(im.numpy().tobytes()) for im in train.images}
    assert not any(bytes(im.numpy().tobytes()) in flat_train for im in test.images)


def test_cache_round_trip_and_corrupt_cache(tmp_path):
    first = load_shapes("train", tmp_path, n_train=60, n_test=20)
    files = list(tmp_path.rglob("train.pt"))
    assert len(files) == 1 and not list(tmp_path.rglob("*.tmp"))
    again = load_shapes("train", tmp_path, n_train=60, n_test=20)
    assert torch.equal(first.images, again.images)
    files[0].write_bytes(b"garbage from an interrupted write")
    healed = load_shapes("train", tmp_path, n_train=60, n_test=20)
    assert torch.equal(first.images, healed.images)


def test_bad_split(tmp_path):
    with pytest.raises(DataError, match="splits"):
        load_shapes("val", tmp_path)
    with pytest.raises(DataError, match="splits"):
        load_dataset("shapes", "unlabeled", root=tmp_path)

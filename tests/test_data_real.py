"""Real data sets, read from small fake folders in the publishers' layouts; missing and corrupt files."""

import pickle

import numpy as np
import pytest
import torch

from sslbook.data import DataError, load_dataset
from sslbook.data.registry import pretrain_split


def _fake_cifar(root, hundred=False, n=20):
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = b"fine_labels" if hundred else b"labels"
    files = ["train", "test"] if hundred else [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for f in files:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / f, "wb") as fh:
            pickle.dump({b"data": data, key: rng.integers(0, 100 if hundred else 10, n).tolist()}, fh)
    meta = (
        {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}
        if hundred
        else {b"label_names": [f"c{i}".encode() for i in range(10)]}
    )
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as fh:
        pickle.dump(meta, fh)
    return folder


def test_cifar10_layout(tmp_path):
    folder = _fake_cifar(tmp_path)
    train = load_dataset("cifar10", "train", root=tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert train.images.shape == (100, 3, 32, 32) and test.images.shape == (20, 3, 32, 32)
    assert train.info.classes[3] == "c3" and train.info.num_classes == 10
    # the pickles store each image as 1024 R, then G, then B values, row-major
    raw = pickle.load(open(folder / "data_batch_1", "rb"), encoding="bytes")[b"data"][0]
    assert torch.equal(train.images[0, 1, 0, :], torch.from_numpy(raw[1024:1056]))


def test_cifar100_layout(tmp_path):
    _fake_cifar(tmp_path, hundred=True)
    ds = load_dataset("cifar100", "test", root=tmp_path)
    assert len(ds) == 20 and ds.info.num_classes == 100


def test_stl10_layout(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (4, 3, 96, 96), dtype=np.uint8)
    img.transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")  # column-major, as the files store them
    np.array([1, 2, 10, 3], dtype=np.uint8).tofile(folder / "train_y.bin")
    img[:3].transpose(0, 1, 3, 2).tofile(folder / "unlabeled_X.bin")
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    train = load_dataset("stl10", "train", root=tmp_path)
    assert torch.equal(train.images, torch.from_numpy(img)) and train.labels.tolist() == [0, 1, 9, 2]
    unl = load_dataset("stl10", pretrain_split("stl10"), root=tmp_path)
    x, y = unl[2]
    assert len(unl) == 3 and y == -1 and torch.equal(x, torch.from_numpy(img[2]))
    with pytest.raises(DataError, match="test_X.bin"):
        load_dataset("stl10", "test", root=tmp_path)


def _fake_folder(root, classes=("cat", "dog"), n=3, size=(40, 30)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")


def test_image_folder(tmp_path):
    _fake_folder(tmp_path / "mine")
    ds = load_dataset(f"folder:{tmp_path / 'mine'}", "train", image_size=24)
    x, y = ds[4]
    assert x.dtype == torch.uint8 and x.shape == (3, 24, 24) and y == 1
    assert (
        ds.info.classes == ["cat", "dog"]
        and len(load_dataset(f"folder:{tmp_path / 'mine'}", "test", image_size=24)) == 6
    )
    # imagenet is the same layout under the data root
    _fake_folder(tmp_path / "imagenet")
    assert len(load_dataset("imagenet", "train", root=tmp_path, image_size=16)) == 6


def test_corrupt_image_is_named(tmp_path):
    _fake_folder(tmp_path / "mine")
    bad = tmp_path / "mine" / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    ds = load_dataset(f"folder:{tmp_path / 'mine'}", "train", image_size=16)
    index = [str(p) for p, _ in ds.samples].index(str(bad))
    with pytest.raises(DataError, match="broken.jpg"):
        ds[index]
    assert len(ds.verify()) == 1 and "broken.jpg" in ds.verify()[0]


def test_missing_data_sets_say_where_and_how(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*\n.*--download"):
        load_dataset("cifar10", "train", root=tmp_path)
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100", "train", root=tmp_path)
    with pytest.raises(DataError, match="stl10_binary"):
        load_dataset("stl10", "train", root=tmp_path)
    with pytest.raises(DataError, match=r"imagenet(.|\n)*image-net.org/download(.|\n)*train/<wnid>"):
        load_dataset("imagenet", "train", root=tmp_path)
    with pytest.raises(DataError, match="nowhere"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}", "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'empty'}", "train")
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("mnist", "train", root=tmp_path)
    with pytest.raises(DataError, match="splits"):
        load_dataset("cifar10", "validation", root=tmp_path)


def test_truncated_cifar_file(tmp_path):
    folder = _fake_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(b"\x80\x04trunc")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", "train", root=tmp_path)

"""Real data sets, read from the files their publishers distribute (no torchvision needed to read).

- CIFAR-10 / CIFAR-100: the "python version" pickles (``cifar-10-batches-py/``, ``cifar-100-python/``).
- STL-10: the binary version (``stl10_binary/``), with its 100,000-image unlabelled split memory-mapped.
- Image folders (ImageNet and ``folder:PATH``): ``train/`` and ``val/`` with one sub-folder per class;
  images are decoded with Pillow, resized (shorter side) and centre-cropped to the preset's image size.
  The views' random resized crops are then taken from that square, on the device; the papers crop from
  the full-resolution image, so a small crop here has fewer source pixels (a speed trade: every image
  is decoded once to a fixed size, and the batch is augmented on the GPU).

A missing data set raises :class:`DataError` naming the path and how to get the files. Nothing here
downloads anything; ``download=True`` (the CLI's ``--download``) asks torchvision to fetch CIFAR or
STL-10 into the data folder, and only then.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sslbook.data.base import DataError, DataInfo, TensorImageDataset

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
STL10_STATS = ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


class _DataOnlyUnpickler(pickle.Unpickler):
    """Reads the pickles the CIFAR archives hold (dicts, lists, bytes, strings, numbers and numpy arrays) and
    refuses every other global: a plain ``pickle.load`` calls whatever a file names (``os.system``, say), so a
    crafted ``data_batch_1`` put into ``data/`` would run code when the data set is loaded."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
        ("builtins", "str"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "bool"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"it asks for {module}.{name}, which no data set file contains: refusing to load it "
            "(loading it could run code)"
        )


def safe_unpickle(f, encoding: str = "bytes"):
    """``pickle.load`` restricted to plain data and numpy arrays (see :class:`_DataOnlyUnpickler`)."""
    return _DataOnlyUnpickler(f, encoding=encoding).load()


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return safe_unpickle(f)
    except pickle.UnpicklingError as e:
        raise DataError(f"cannot read {path}: {e}. Delete it and get the data set again from its publisher.") from e
    except Exception as e:  # truncated or foreign file
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}. Delete it and get the data set again.") from e


def _torchvision_download(kind: str, root: Path) -> None:
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    if kind == "cifar10":
        tvd.CIFAR10(str(root), download=True)
    elif kind == "cifar100":
        tvd.CIFAR100(str(root), download=True)
    elif kind == "stl10":
        tvd.STL10(str(root), split="train", download=True)


def load_cifar(name: str, split: str, root: Path, download: bool = False) -> TensorImageDataset:
    """CIFAR-10 or CIFAR-100 ``train`` / ``test`` as an in-memory uint8 data set (32×32)."""
    ten = name == "cifar10"
    folder = root / ("cifar-10-batches-py" if ten else "cifar-100-python")
    files = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    if split == "test":
        files = ["test_batch"] if ten else ["test"]
    elif split != "train":
        raise DataError(f"{name} has splits 'train' and 'test', not {split!r}")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and download:
        _torchvision_download(name, root)
        missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        url = "https://www.cs.toronto.edu/~kriz/" + ("cifar-10-python.tar.gz" if ten else "cifar-100-python.tar.gz")
        raise DataError(
            f"{name} not found: expected {folder / missing[0]}.\n"
            f"Get it with `python -m sslbook train ... --data {name} --download` (torchvision fetches it into {root}),\n"
            f"or download {url} and extract it into {root}."
        )
    images, labels = [], []
    key = b"labels" if ten else b"fine_labels"
    for f in files:
        d = _unpickle(folder / f)
        if b"data" not in d or key not in d:
            raise DataError(f"{folder / f} is not a {name} batch file (no {key!r} entry)")
        images.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(d[key])
    meta = (
        _unpickle(folder / ("batches.meta" if ten else "meta"))
        if (folder / ("batches.meta" if ten else "meta")).is_file()
        else {}
    )
    names = meta.get(b"label_names" if ten else b"fine_label_names")
    classes = [n.decode() for n in names] if names else [str(i) for i in range(10 if ten else 100)]
    mean, std = CIFAR10_STATS if ten else CIFAR100_STATS
    info = DataInfo(name, classes, 32, mean, std)
    return TensorImageDataset(torch.from_numpy(np.concatenate(images)), torch.tensor(labels), info)


class STL10Unlabeled(Dataset):
    """STL-10's unlabelled split, read lazily from a memory map (2.7 GB stays on disk)."""

    def __init__(self, path: Path, info: DataInfo):
        self.path, self.info = path, info
        size = os.path.getsize(path)
        if size % (3 * 96 * 96):
            raise DataError(f"{path} is truncated: {size} bytes is not a whole number of 3×96×96 images")
        n = size // (3 * 96 * 96)
        self._data = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, 96, 96))
        self.labels = torch.full((n,), -1, dtype=torch.long)

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, i: int):
        return torch.from_numpy(np.ascontiguousarray(self._data[i].transpose(0, 2, 1))), -1


def load_stl10(split: str, root: Path, download: bool = False):
    """STL-10 ``train`` (5,000 labelled), ``test`` (8,000) or ``unlabeled`` (100,000), 96×96."""
    folder = root / "stl10_binary"
    if split not in ("train", "test", "unlabeled"):
        raise DataError(f"stl10 has splits 'train', 'test' and 'unlabeled', not {split!r}")
    x_path = folder / f"{split}_X.bin"
    if not x_path.is_file() and download:
        _torchvision_download("stl10", root)
    if not x_path.is_file():
        raise DataError(
            f"stl10 not found: expected {x_path}.\n"
            f"Get it with `python -m sslbook train ... --data stl10 --download` (torchvision fetches it into {root}),\n"
            f"or download http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz and extract it into {root}."
        )
    names_file = folder / "class_names.txt"
    classes = names_file.read_text().split() if names_file.is_file() else [str(i) for i in range(10)]
    info = DataInfo("stl10", classes, 96, *STL10_STATS)
    if split == "unlabeled":
        return STL10Unlabeled(x_path, info)
    raw = np.fromfile(x_path, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise DataError(f"{x_path} is truncated: {raw.size} bytes is not a whole number of 3×96×96 images")
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # the files store images column-major
    y_path = folder / f"{split}_y.bin"
    if not y_path.is_file():
        raise DataError(f"stl10 labels not found: expected {y_path}")
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1  # stored as 1..10
    if len(labels) != len(images):
        raise DataError(
            f"{y_path} holds {len(labels)} labels for the {len(images)} images of {x_path}: one of them is damaged"
        )
    return TensorImageDataset(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), info)


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` decoded by Pillow into uint8 3×S×S (shorter side resized, centre crop).

    An unreadable image raises :class:`DataError` naming its path.
    """

    def __init__(self, root: Path, image_size: int, info: DataInfo | None = None, name: str = "folder"):
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not classes:
            raise DataError(f"{root} has no class sub-folders: expected {root}/<class name>/<image files>")
        self.samples: list[tuple[Path, int]] = []
        for i, c in enumerate(classes):
            for path in sorted((root / c).rglob("*")):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    self.samples.append((path, i))
        if not self.samples:
            raise DataError(f"{root} has class folders but no images with extensions {IMAGE_EXTENSIONS}")
        self.image_size = image_size
        self.info = info or DataInfo(name, classes, image_size, *IMAGENET_STATS)
        self.labels = torch.tensor([label for _, label in self.samples])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                s = self.image_size
                w, h = im.size
                scale = s / min(w, h)
                im = im.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.BILINEAR)
                w, h = im.size
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
                x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        except Exception as e:
            raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
        return x, label

    def verify(self) -> list[str]:
        """Decode every image; return the messages for those that fail (an empty list = all good)."""
        bad = []
        for i in range(len(self)):
            try:
                self[i]
            except DataError as e:
                bad.append(str(e))
        return bad


def load_folder(root: Path, split: str, image_size: int, name: str = "folder") -> ImageFolderDataset:
    """``root/train`` for ``train``; ``root/val`` (or ``root/test``) for ``test``."""
    if not root.is_dir():
        how = (
            "\nImageNet cannot be downloaded automatically: after accepting its terms at https://image-net.org/download.php, "
            "get ILSVRC2012's train and validation archives and unpack them as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG "
            "(the validation images sorted into class folders), or point to an existing copy with --data folder:PATH "
            "or $SSLBOOK_DATA."
            if name == "imagenet"
            else ""
        )
        raise DataError(
            f"{name} not found: expected a folder {root} with train/ and val/ inside, one sub-folder per class." + how
        )
    sub = {"train": ["train"], "test": ["val", "test"]}.get(split)
    if sub is None:
        raise DataError(f"{name} has splits 'train' and 'test' (read from val/), not {split!r}")
    for s in sub:
        if (root / s).is_dir():
            train_classes = (
                sorted(d.name for d in (root / "train").iterdir() if d.is_dir()) if (root / "train").is_dir() else None
            )
            ds = ImageFolderDataset(root / s, image_size, name=name)
            if train_classes is not None and split == "test" and ds.info.classes != train_classes:
                raise DataError(f"{root / s} and {root / 'train'} have different class folders")
            return ds
    raise DataError(f"{name}: no {' or '.join(sub)}/ folder in {root}; expected {root}/{sub[0]}/<class>/<images>")

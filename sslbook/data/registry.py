"""Data sets by name, as the CLI and the presets use them.

==============  ======================================================  ============
name            what                                                    pre-training
==============  ======================================================  ============
``shapes``      generated scenes of 10 object classes, 32×32 (default)  train
``tabletop``    generated flat objects of 5 other classes on patterns   train
``cifar10``     CIFAR-10, 32×32                                         train
``cifar100``    CIFAR-100, 32×32                                        train
``stl10``       STL-10, 96×96, with its 100k unlabelled images          unlabeled
``imagenet``    ``data/imagenet/{train,val}/<class>/*``                 train
``folder:PATH`` any ``PATH/{train,val}/<class>/*``                      train
``random``      uniform noise, random labels, CIFAR-10's shape: timing  train
==============  ======================================================  ============

Files live under :data:`DATA_ROOT`: ``$SSLBOOK_DATA`` if set, else the repository's ``data/`` folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from sslbook.data.base import DataError

_REPO_DATA = Path(__file__).resolve().parents[2] / "data"
DATA_ROOT = Path(
    os.environ.get("SSLBOOK_DATA", _REPO_DATA if _REPO_DATA.is_dir() else Path.home() / ".cache" / "sslbook" / "data")
)

NAMES = ("shapes", "tabletop", "cifar10", "cifar100", "stl10", "imagenet", "random")


def available() -> list[str]:
    return [*NAMES, "folder:PATH"]


def pretrain_split(name: str) -> str:
    """The split self-supervised pre-training reads: STL-10's unlabelled images, else ``train``."""
    return "unlabeled" if name == "stl10" else "train"


def load_dataset(
    name: str, split: str = "train", root=None, download: bool = False, image_size: int | None = None, **kwargs
):
    """The data set ``name``'s ``split`` (``train``, ``test``, or ``unlabeled`` for STL-10).

    Returns a Dataset of ``(uint8 3×H×W image, int label)`` with an ``info`` attribute
    (:class:`~sslbook.data.base.DataInfo`). ``kwargs`` go to the generator of ``shapes``
    (``n_train``, ``n_test``, ``seed``, and ``masks=True`` for the per-pixel class masks and boxes
    of :class:`~sslbook.data.base.SegmentedImageDataset`).
    """
    root = Path(root) if root is not None else DATA_ROOT
    if name == "shapes":
        from sslbook.data.synthetic import load_shapes

        if split not in ("train", "test"):
            raise DataError(f"shapes has splits 'train' and 'test', not {split!r}")
        return load_shapes(split, root, image_size=image_size or 32, **kwargs)
    if name == "tabletop":
        from sslbook.data.tabletop import load_tabletop

        return load_tabletop(split, root, image_size=image_size or 32, **kwargs)
    if name == "random":
        from sslbook.data.noise import load_random

        return load_random(split, image_size=image_size or 32, **kwargs)
    if name in ("cifar10", "cifar100"):
        from sslbook.data.real import load_cifar

        return load_cifar(name, split, root, download)
    if name == "stl10":
        from sslbook.data.real import load_stl10

        return load_stl10(split, root, download)
    if name == "imagenet" or name.startswith("folder:"):
        from sslbook.data.real import load_folder

        path = root / "imagenet" if name == "imagenet" else Path(name[len("folder:") :]).expanduser()
        return load_folder(path, split, image_size or 224, name="imagenet" if name == "imagenet" else "folder")
    raise DataError(f"unknown data set {name!r}; choose one of {', '.join(available())}")

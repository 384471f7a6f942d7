"""Presets and recipes: every number that decides a run, in one readable place.

A **preset** names the data set, backbone, epochs, batch size and image size:

- ``tiny``: the generated ``shapes`` data set and a small CNN; a chapter runs in minutes on a laptop CPU.
- ``full``: the paper-scale recipe (CIFAR-10 and a CIFAR ResNet-18 for the ResNet methods).

The whole book follows one setting: the environment variable ``SSLBOOK_PRESET`` (default ``tiny``),
read by :func:`current_preset`. ``SSLBOOK_PRESET=full make book`` runs every chapter at full scale.

A **recipe** is what one method changes on top of a preset (optimiser, learning rate, epochs, method
arguments), with the source of each number. :func:`resolve` merges preset → recipe → your overrides.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from dataclasses import dataclass, field

PRESET_ENV = "SSLBOOK_PRESET"
RUNS_ENV = "SSLBOOK_RUNS"
_REPO = Path(__file__).resolve().parents[1]
# runs/ beside the package in a checkout; a user cache folder when sslbook is installed elsewhere
_REPO_RUNS = _REPO / "runs" if (_REPO / "pyproject.toml").is_file() else Path.home() / ".cache" / "sslbook" / "runs"


@dataclass
class TrainConfig:
    """Everything a training run needs; checkpoints store it as a plain dict."""

    method: str = "supervised"
    preset: str = "tiny"
    data: str = "shapes"
    data_kwargs: dict = field(default_factory=dict)
    backbone: str = "convnet"
    image_size: int = 32
    epochs: int = 10
    batch_size: int = 256  # global batch: split over processes under torchrun
    optimizer: str = "sgd"  # sgd | adamw | lars
    base_lr: float = 0.1  # lr = base_lr × batch_size / 256 (the linear scaling rule, applied in the trainer)
    min_lr_ratio: float = 0.0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    max_steps: int | None = None  # stop early after this many optimiser steps (smoke tests, benchmarks)
    seed: int = 0
    num_workers: int = 0
    augment_on: str = "device"  # device: views made on the batch after it reaches the device; loader: in DataLoader workers
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    grad_clip: float | None = None
    sync_bn: bool = False
    out: str | None = None  # checkpoint folder; None = no checkpoints
    resume: bool = False
    progress: bool = True
    log_every: int = 10
    # evaluation after training
    eval_protocols: tuple = ("knn", "linear")
    knn_k: int = 20
    knn_temperature: float = 0.07
    linear_epochs: int = 100
    eval_batch_size: int = 512
    method_kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["eval_protocols"] = list(self.eval_protocols)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "eval_protocols" in d:
            d["eval_protocols"] = tuple(d["eval_protocols"])
        return cls(**d)


PRESETS: dict[str, dict] = {
    "tiny": dict(
        data="shapes",
        data_kwargs=dict(n_train=5000, n_test=2000),
        backbone="convnet",
        image_size=32,
        epochs=15,
        batch_size=256,
        num_workers=0,
        knn_k=20,
        linear_epochs=100,
    ),
    "full": dict(
        data="cifar10",
        backbone="resnet18_cifar",
        image_size=32,
        epochs=800,  # lightly's CIFAR-10 benchmark (800 epochs, batch 512)
        batch_size=512,
        num_workers=8,
        knn_k=200,  # k = 200, as in Wu et al. 2018 and lightly's benchmark
        linear_epochs=100,
    ),
}

# Method recipes: {method: {preset: overrides}}. A method file adds its line here.
RECIPES: dict[str, dict[str, dict]] = {
    "supervised": {
        # Tiny: SGD + cosine; a few epochs suffice on the generated data.
        "tiny": dict(optimizer="sgd", base_lr=0.1, weight_decay=5e-4, epochs=10),
        # Full: the standard CIFAR ResNet-18 recipe (SGD 0.1, momentum 0.9, wd 5e-4, 200 epochs, batch 128).
        "full": dict(optimizer="sgd", base_lr=0.2, weight_decay=5e-4, epochs=200, batch_size=128),
    },
    # Chapter 6: memory banks and momentum encoders. Tiny recipes were chosen on the generated data at this
    # preset (short runs, so a faster momentum than the papers' and a queue of a few batches).
    "instdisc": {
        "tiny": dict(optimizer="sgd", base_lr=0.06, weight_decay=5e-4, epochs=4,
                     method_kwargs=dict(bank_size=5000, num_negatives=1024)),
        # Full: Wu et al. 2018, sec. 4: SGD lr 0.03 (batch 256), momentum 0.9, wd 5e-4, 200 epochs,
        # τ = 0.07, bank momentum 0.5, 4096 negatives; bank_size = CIFAR-10's 50 000 training images.
        "full": dict(optimizer="sgd", base_lr=0.03, weight_decay=5e-4, epochs=200, batch_size=256,
                     method_kwargs=dict(bank_size=50000, num_negatives=4096, temperature=0.07, bank_momentum=0.5)),
    },
    "pirl": {
        "tiny": dict(optimizer="sgd", base_lr=0.06, weight_decay=5e-4, epochs=4,
                     method_kwargs=dict(bank_size=5000, num_negatives=1024)),
        # Full: Misra & van der Maaten 2020, sec. 4: SGD lr 0.12 for batch 1024 (= 0.03 per 256), wd 1e-4,
        # 800 epochs, 32 000 negatives, τ = 0.07, bank momentum 0.5, λ = 0.5.
        "full": dict(optimizer="sgd", base_lr=0.03, weight_decay=1e-4, epochs=800, batch_size=1024,
                     method_kwargs=dict(bank_size=50000, num_negatives=32000, temperature=0.07, bank_momentum=0.5, lam=0.5)),
    },
    "moco_v1": {
        "tiny": dict(optimizer="sgd", base_lr=0.06, weight_decay=5e-4, epochs=4,
                     method_kwargs=dict(queue_size=4096, momentum=0.99)),
        # Full: He et al. 2020, sec. 4: SGD lr 0.03 (batch 256), wd 1e-4, m = 0.999, K = 65536, τ = 0.07,
        # 200 epochs, 128-d linear head, shuffled BN over 8 GPUs (bn_splits=8 on one).
        "full": dict(optimizer="sgd", base_lr=0.03, weight_decay=1e-4, epochs=200, batch_size=256,
                     method_kwargs=dict(queue_size=65536, momentum=0.999, temperature=0.07, bn_splits=8)),
    },
    "moco_v2": {
        "tiny": dict(optimizer="sgd", base_lr=0.06, weight_decay=5e-4, epochs=4,
                     method_kwargs=dict(queue_size=4096, momentum=0.99, mlp_hidden=256)),
        # Full: Chen et al. 2020 (MoCo v2): SGD lr 0.03 × batch/256, wd 1e-4, m = 0.999, K = 65536, τ = 0.2,
        # MLP head 2048-d hidden, blur, cosine schedule, 200 epochs (batch 256).
        "full": dict(optimizer="sgd", base_lr=0.03, weight_decay=1e-4, epochs=200, batch_size=256,
                     method_kwargs=dict(queue_size=65536, momentum=0.999, temperature=0.2, mlp_hidden=2048, bn_splits=8)),
    },
    "moco_v3": {
        "tiny": dict(optimizer="sgd", base_lr=0.1, weight_decay=5e-4, epochs=4,
                     method_kwargs=dict(momentum=0.99, temperature=0.2, mlp_hidden=512, dim=128)),
        # Full: Chen, Xie & He 2021, ViT-S recipe: AdamW lr 1.5e-4 × batch/256, wd 0.1, batch 4096, 300 epochs,
        # 40 warm-up epochs, τ = 0.2, m from 0.99 to 1 (cosine), MLPs 4096-d hidden, 256-d output.
        # (ResNet-50 recipe: LARS lr 0.3 × batch/256 … see the paper's appendix; τ = 1.0.)
        "full": dict(optimizer="adamw", base_lr=1.5e-4, weight_decay=0.1, epochs=300, warmup_epochs=40,
                     batch_size=4096, backbone="vit_small",
                     method_kwargs=dict(momentum=0.99, temperature=0.2, mlp_hidden=4096, dim=256)),
    },
}


def current_preset() -> str:
    """The preset the book runs at: ``$SSLBOOK_PRESET`` or ``tiny``."""
    name = os.environ.get(PRESET_ENV, "tiny")
    if name not in PRESETS:
        raise ValueError(f"{PRESET_ENV}={name!r} is not a preset; choose one of {sorted(PRESETS)}")
    return name


def run_dir(name: str, preset: str | None = None) -> str:
    """Where the book keeps the run called ``name`` at ``preset``: ``$SSLBOOK_RUNS/<preset>/<name>``
    (default: the repository's ``runs/`` folder, git-ignored).

    Chapters train with ``train(method, out=run_dir(name), resume=True)``: the first chapter that
    needs a run trains it and checkpoints it; a later chapter (or a re-execution) that asks for the
    same run with the same settings finds the finished checkpoint, loads it and only re-evaluates
    ("train, or load what was trained"). Delete the folder to train again.
    """
    preset = preset or current_preset()
    root = Path(os.environ[RUNS_ENV]) if os.environ.get(RUNS_ENV) else _REPO_RUNS
    return str(root / preset / name)


def get_preset(name: str | None = None) -> dict:
    name = name or current_preset()
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name])


def resolve(method: str, preset: str | None = None, **overrides) -> TrainConfig:
    """The run's config: preset, then the method's recipe for it, then ``overrides`` (None = keep)."""
    preset = preset or current_preset()
    values = get_preset(preset)
    values.update(RECIPES.get(method, {}).get(preset, {}))
    method_kwargs = dict(values.pop("method_kwargs", {}))
    method_kwargs.update(overrides.pop("method_kwargs", None) or {})
    data_kwargs = dict(values.pop("data_kwargs", {}))
    if overrides.get("data") not in (None, values.get("data")):
        data_kwargs = {}  # a different data set than the preset's: its size options do not apply
    data_kwargs.update(overrides.pop("data_kwargs", None) or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise TypeError(f"unknown training options: {sorted(unknown)}")
    return TrainConfig(method=method, preset=preset, method_kwargs=method_kwargs, data_kwargs=data_kwargs, **values)

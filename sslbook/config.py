"""Presets and recipes: every number that decides a run, in one readable place.

A **preset** names the data set, backbone, epochs, batch size and image size:

- ``tiny``: the generated ``shapes`` data set and a small CNN; a chapter runs in minutes on a laptop CPU.
- ``full``: the paper-scale recipe (CIFAR-10 and a CIFAR ResNet-18 for the ResNet methods).
- ``speedrun``: not a preset of the book but of ``python -m sslbook train``: CIFAR-10 self-supervised
  pre-training against the clock, to a kNN target (:data:`SPEEDRUN_TARGET`); only the methods with a
  ``speedrun`` recipe run at it.

The whole book follows one setting: the environment variable ``SSLBOOK_PRESET`` (default ``tiny``),
read by :func:`current_preset`. ``SSLBOOK_PRESET=full make book`` runs every chapter at full scale.

A **recipe** is what one method changes on top of a preset (optimiser, learning rate, epochs, method
arguments), with the source of each number. :func:`resolve` merges preset → recipe → your overrides.

**Batch size and learning rate.** ``batch_size`` is always the *global* batch B, the images of one
optimiser step over all processes: under ``torchrun --nproc_per_node=K`` each process takes B/K (B must be
a multiple of K), on one process all B. Recipes give ``base_lr``, the rate for a batch of 256; the trainer
uses lr = base_lr × B / 256 (the linear scaling rule, Goyal et al. 2017), so a recipe trains the same on
one GPU or eight. ``sync_bn`` asks for BatchNorm over the global batch where the method's paper does.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

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
    batch_size: int = 256  # the GLOBAL batch B: under torchrun --nproc_per_node=K each process takes B/K (B % K == 0)
    optimizer: str = "sgd"  # sgd | adamw | lars
    base_lr: float = (
        0.1  # lr = base_lr × batch_size / 256 with the global batch (the linear scaling rule, in the trainer)
    )
    min_lr_ratio: float = 0.0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    max_steps: int | None = None  # stop early after this many optimiser steps (smoke tests, benchmarks)
    seed: int = 0
    num_workers: int = 0
    augment_on: str = (
        "device"  # device: views made on the batch after it reaches the device; loader: in DataLoader workers
    )
    # where batches come from. device: the uint8 images copied once to the device and drawn there by index
    # (sslbook.data.device.DeviceBatches; in-memory data sets and augment_on="device" only); loader: a
    # DataLoader with num_workers workers and pinned memory; auto: device on CUDA when the images take at
    # most a quarter of the free GPU memory, else loader. Both give the same batches in the same order.
    data_on: str = "auto"
    compile: bool = False  # torch.compile the method's sub-networks (backbone, heads, momentum copies)
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    grad_clip: float | None = None
    # BatchNorm statistics of the whole global batch under torchrun (SyncBN), for recipes whose paper uses
    # global/cross-replica BN; False: each process's own B/K (see sslbook.distributed). No effect on one process.
    sync_bn: bool = False
    out: str | None = None  # checkpoint folder; None = no checkpoints
    resume: bool = False  # continue the run in `out` (the settings that define the run must be the same)
    overwrite: bool = False  # start afresh in an `out` that already holds a run (its last.pt is replaced)
    # also checkpoint every this many optimiser steps inside an epoch (None: at the end of each epoch only)
    checkpoint_every: int | None = None
    progress: bool = True
    log_every: int = 10
    # evaluation after training
    eval_protocols: tuple = ("knn", "linear")
    knn_k: int = 20
    knn_temperature: float = 0.07
    linear_epochs: int = 100
    eval_batch_size: int = 512
    # the test set's own noise: resample its items this many times and report each top-1's std and 95% interval
    # (knn_top1_boot_std, knn_top1_low, knn_top1_high, the same for linear_top1); 0 = off
    eval_bootstrap: int = 0
    # the random-init control (epochs=0 only): BatchNorm's running statistics measured on the training images
    # before evaluation (sslbook.evaluation.refresh_bn_statistics); part of what defines the run
    bn_refresh: bool = False
    # learning curve: after every epoch (and before the first), weighted kNN on a fixed subset of this
    # many labelled training images (the bank) and half as many test images; 0 = off. Uses no random
    # numbers, so a run with the monitor trains exactly as one without it.
    monitor_knn: int = 0
    monitor_every: int = 1  # epochs between those kNN checks (the last epoch is always checked)
    # a speed run's target: stop training once the monitor's kNN top-1 reaches this fraction (TrainResult.target_reached
    # then gives the epoch and the training seconds it took); None = train every epoch. Needs monitor_knn > 0.
    target_knn: float | None = None
    # semi-supervised runs: the fraction of the training images whose labels a method that trains on labels
    # (Method.uses_labels) sees, a class-balanced subset fixed by the fraction and the seed
    # (sslbook.data.labelled_subset); the other images reach it with label -1. None: every label.
    label_fraction: float | None = None
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
        monitor_knn=2000,  # 2000-image bank, 1000 test images: ~1 s per epoch on a laptop CPU
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
        monitor_knn=10000,  # lightly's benchmark evaluates kNN every epoch; a 10k bank keeps it a few seconds
    ),
    # The speed run: CIFAR-10 ResNet-18 pre-training to 90% kNN top-1 (k = 200, the whole training set as the
    # bank, the whole test set: lightly's protocol) in under 10 minutes on one H100. The clock is the training
    # time; every `monitor_every` epochs the kNN check runs (off the clock, its seconds logged) and the run stops
    # at the target. Only kNN at the end (the linear probe would cost more than the run). Run it with --compile.
    "speedrun": dict(
        data="cifar10",
        backbone="resnet18_cifar",
        image_size=32,
        epochs=500,
        batch_size=512,
        num_workers=8,
        knn_k=200,
        eval_protocols=("knn",),
        monitor_knn=50000,  # the whole training set as the bank and, with n // 2 ≥ 10,000, the whole test set
        monitor_every=10,
        target_knn=0.90,
    ),
}
# ``long``: the tiny preset's data, backbones and recipes, trained LONG_FACTOR× the tiny epochs (a CPU-hours budget).
# It has no table of its own: :func:`resolve` builds it from the tiny preset and recipe, then applies a
# method's ``long`` recipe if it has one. ``python -m sslbook reference`` trains every method at it and stores
# the results the chapters load (sslbook.reference).
LONG_FACTOR = 10
PRESETS["long"] = dict(PRESETS["tiny"])
BOOK_PRESETS = ("tiny", "full")  # what SSLBOOK_PRESET may name: every method has a recipe at both
SPEEDRUN_TARGET = PRESETS["speedrun"]["target_knn"]

# Method recipes: {method: {preset: overrides}}. A method file adds its line here.
RECIPES: dict[str, dict[str, dict]] = {
    "supervised": {
        # Tiny: SGD + cosine; a few epochs suffice on the generated data.
        "tiny": dict(optimizer="sgd", base_lr=0.1, weight_decay=5e-4, epochs=10),
        # Full: the standard CIFAR ResNet-18 recipe (SGD 0.1, momentum 0.9, wd 5e-4, 200 epochs, batch 128).
        "full": dict(optimizer="sgd", base_lr=0.2, weight_decay=5e-4, epochs=200, batch_size=128),
    },
    "byol": {
        # Tiny: SimCLR's tiny optimiser (AdamW, wd 1e-4, warm-up 0.5 epoch), batch 64 (78 steps an epoch: with no negatives
        # a small batch costs the loss nothing), 5 epochs, crops of 20–100%, τ 0.99 → 1 (a ~100-step memory in a run of
        # 390 steps; the paper's 0.996 is for ~10⁵ steps), and the predictor at 10× the rate of the rest
        # (predictor_lr_scale: Tian, Chen & Ganguli 2021 show the predictor must adapt faster than the encoder).
        # Random init (seed 0): kNN 40.5% / linear 68.7%. Measured on the shared 2-core CPU, seed 0, batch 64:
        # 3 epochs at the paper's equal rates: 40.5% / 66.5% (not above); 8 epochs: 51.0% / 70.5%; predictor ×10:
        # 3 epochs 44.2% / 69.9%, 4 epochs 47.7% / 71.3%, 5 epochs (this recipe) 51.0% / 72.3%; ×30, 3 epochs:
        # 44.9% / 71.3%; ×10 with τ_base 0.9: 44.1% / 68.5%; ×10 with a fixed (undecayed) predictor rate: 49.7% / 71.3%;
        # SGD (lr 0.2, wd 5e-4): 40.7% / 66.1%. Seed 1 (its random init: 37.5% / 64.7%), this recipe: 38.0% / 63.4%,
        # above on kNN only: at this budget BYOL's margin over its floor depends on the seed.
        "tiny": dict(
            optimizer="adamw",
            base_lr=0.004,
            weight_decay=1e-4,
            epochs=5,
            batch_size=64,
            warmup_epochs=0.5,
            method_kwargs=dict(
                proj_dim=128,
                hidden_dim=512,
                base_momentum=0.99,
                blur_p=(0.0, 0.0),
                crop_scale=(0.2, 1.0),
                predictor_lr_scale=10.0,
            ),
        ),
        # Full: solo-learn's CIFAR BYOL (LARS lr 1.0 × batch/256, wd 1e-5, τ 0.99 → 1, 10 warm-up epochs,
        # 1000 epochs, projector 4096 → 256); no blur at 32 px. Global BN: the official code accumulates the BN
        # statistics across devices (deepmind-research byol/configs/byol.py, bn_config cross_replica_axis).
        "full": dict(
            optimizer="lars",
            base_lr=1.0,
            weight_decay=1e-5,
            epochs=1000,
            batch_size=256,
            warmup_epochs=10,
            sync_bn=True,
            method_kwargs=dict(proj_dim=256, hidden_dim=4096, base_momentum=0.99, blur_p=(0.0, 0.0)),
        ),
    },
    "simsiam": {
        # Tiny: SimCLR's tiny optimiser (AdamW, wd 1e-4, warm-up 0.5 epoch), batch 64 (78 steps an epoch), 5 epochs,
        # base lr 0.002; the predictor's rate fixed at its peak (the paper) and 10× the rest (predictor_lr_scale, as
        # for BYOL). Projector 512 (2 layers, BN on the output), predictor bottleneck 128 (a quarter, as in the
        # paper); crops of 20–100% (the class default). Random init: kNN 40.5% / linear 68.7% (seed 0), 37.5% / 64.7%
        # (seed 1). Measured on the shared 2-core CPU, batch 64: equal rates, 3 epochs: 43.0% / 67.8% and 42.6% / 65.4%
        # (two executions; base lr 0.004: 41.4% / 59.9%, 0.016: 33.8% / 47.0%; wd 1.0: 41.5% / 61.7%; batch 128:
        # 37.5% / 58.7%); predictor ×10, 3 epochs: 49.8% / 71.7% (seed 0), 39.7% / 64.4% (seed 1); predictor ×10,
        # 5 epochs (this recipe): 56.9% / 76.3% (seed 0), 42.7% / 65.7% (seed 1), above the floor on both seeds.
        "tiny": dict(
            optimizer="adamw",
            base_lr=0.002,
            weight_decay=1e-4,
            epochs=5,
            batch_size=64,
            warmup_epochs=0.5,
            method_kwargs=dict(proj_dim=512, pred_hidden=128, predictor_lr_scale=10.0),
        ),
        # Full: the paper's CIFAR-10 setting (Chen & He 2021, App. D): SGD lr 0.03 × batch/256, wd 5e-4,
        # momentum 0.9, batch 512, 800 epochs, projector 2048 (2 layers), predictor hidden 512. BN synchronised
        # across devices, as in the official code (facebookresearch/simsiam main_simsiam.py, "Apply SyncBN").
        "full": dict(
            optimizer="sgd",
            base_lr=0.03,
            weight_decay=5e-4,
            epochs=800,
            batch_size=512,
            sync_bn=True,
            method_kwargs=dict(proj_dim=2048, pred_hidden=512),
        ),
    },
    "barlow_twins": {
        # Tiny: SimCLR's tiny optimiser (AdamW, base lr 0.002, wd 1e-4, batch 128, warm-up 0.5 epoch, 3 epochs: ~117
        # steps, a CPU budget of minutes) and its crops of 20–100% (32-px scenes); a 3-layer projector of width 1024
        # (the paper's 8192 is ~64× the compute of the small CNN's head), λ = 5e-3 as in the paper; no blur at 32 px.
        # One run on the shared CPU: kNN 57.4% / linear 76.3% against random init's 40.5% / 68.7%.
        "tiny": dict(
            optimizer="adamw",
            base_lr=0.002,
            weight_decay=1e-4,
            epochs=3,
            batch_size=128,
            warmup_epochs=0.5,
            method_kwargs=dict(proj_dim=1024, lambd=5e-3, blur_p=(0.0, 0.0), crop_scale=(0.2, 1.0)),
        ),
        # Full: the paper (Zbontar et al. 2021): LARS, lr 0.2 × batch/256 for weights, wd 1.5e-6, 10 warm-up
        # epochs, 1000 epochs, projector 3 × 8192, λ = 5e-3; batch 512 for CIFAR; no blur at 32 px. SyncBN, as in
        # the official code (facebookresearch/barlowtwins main.py converts the model with SyncBatchNorm).
        "full": dict(
            optimizer="lars",
            base_lr=0.2,
            weight_decay=1.5e-6,
            epochs=1000,
            batch_size=512,
            warmup_epochs=10,
            sync_bn=True,
            method_kwargs=dict(proj_dim=8192, lambd=5e-3, blur_p=(0.0, 0.0)),
        ),
    },
    # Chapter 2: pretext tasks from image transformations.
    "rotnet": {
        # Tiny: one random angle per image (4× cheaper per step than all four) so the chapter fits
        # its CPU budget. Random resized crops (20–100% of the scene), colour jitter and random grey:
        # on whole colour scenes with light augmentation the network reads the rotation off the
        # horizon and the sky colour alone, and after 3 epochs its features lost to random init
        # (kNN 29% vs 40%); with these views and 6 epochs they beat it.
        # Long (60 epochs, sslbook.reference stores seed 0): 53.0/77.1, 49.5/74.1, 49.7/75.0 over three
        # seeds 0, 1, 2 against random init 40.5/68.7, 37.5/64.6, 44.0/72.3 and the BN-refreshed floor 46.4/73.7,
        # 39.3/69.7, 50.2/76.8 (kNN/linear; `python -m sslbook compare rotnet relative_position jigsaw --preset long
        # --seeds 3`):
        # above plain random init on every seed (+5.6 to +12.5 kNN), but the gain over the BN-refreshed floor,
        # +5.4 / +2.0, is within the spread over seeds (Welch p 0.11 / 0.22, paired 0.11 / 0.20): seed 2's floor
        # is as high as its run.
        "tiny": dict(
            optimizer="sgd",
            base_lr=0.1,
            weight_decay=5e-4,
            epochs=6,
            method_kwargs=dict(all_rotations=False, crop_scale=(0.2, 1.0), jitter_p=0.8, gray_p=0.2),
        ),
        # Full: Gidaris et al. 2018, CIFAR-10 experiments (Sec. 3.1, code github.com/gidariss/FeatureLearningRotNet):
        # SGD, momentum 0.9, batch 128 (×4 rotations), lr 0.1, weight decay 5e-4, 100 epochs (here with
        # a cosine schedule instead of steps ×0.2 at 30/60/80); all four rotations of every image.
        "full": dict(
            optimizer="sgd",
            base_lr=0.2,
            weight_decay=5e-4,
            epochs=100,
            batch_size=128,
            method_kwargs=dict(all_rotations=True),
        ),
    },
    "relative_position": {
        # Tiny: 3×3 grid of 10-px cells on 32-px images, 7-px patches (gap 2, jitter 1) resized to 16 px,
        # each patch with its own colour jitter (as for rotation, colour shortcuts otherwise dominate).
        # A small learning rate: with base_lr 0.1 the features lost to random init (kNN 37% vs 40%,
        # linear 63% vs 69%, 6 epochs); with 0.02 and 4 epochs the linear probe beats it.
        # Long (40 epochs): 56.7/79.1, 51.7/74.8, 52.5/76.5 over three seeds, against the same floors as rotnet's
        # (the same network and seeds): +8.3 / +3.4 over the BN-refreshed floor, Welch p 0.052 / 0.12 (paired 0.058 /
        # 0.11): not beyond the seed spread at 5%; seeds 0 and 1 gain 10-12 kNN points, seed 2 2.3.
        "tiny": dict(
            optimizer="sgd",
            base_lr=0.02,
            weight_decay=5e-4,
            epochs=4,
            method_kwargs=dict(gap=2, jitter=1, patch_size=16, jitter_p=0.8, gray_p=0.2),
        ),
        # Full: STL-10 (96 px, 100k unlabelled images), ResNet-18. Doersch et al. 2015 cut 96-px patches
        # with 48-px gaps and up to 7-px jitter from ImageNet; scaled to 96-px images: 32-px cells,
        # gap 8, jitter 4 → 20-px patches resized to 64 px. SGD 0.1 (×batch/256), wd 5e-4, 200 epochs.
        "full": dict(
            data="stl10",
            image_size=96,
            backbone="resnet18",
            optimizer="sgd",
            base_lr=0.1,
            weight_decay=5e-4,
            epochs=200,
            batch_size=256,
            knn_k=200,
            method_kwargs=dict(gap=8, jitter=4, patch_size=64),
        ),
    },
    "jigsaw": {
        # Tiny: 100 permutations, 7-px tiles (gap 2, jitter 1) resized to 12 px. With base_lr 0.1 the
        # features lost to random init (kNN 31%, linear 61%); a small learning rate as for relative position.
        # Long (30 epochs): 52.2/73.2, 44.5/70.1, 50.1/76.3 over three seeds, same floors as rotnet's: kNN +3.6
        # (p 0.21), linear −0.2 over the BN-refreshed floor.
        "tiny": dict(
            optimizer="sgd",
            base_lr=0.02,
            weight_decay=5e-4,
            epochs=3,
            method_kwargs=dict(num_permutations=100, gap=2, jitter=1, tile_size=12),
        ),
        # Full: Noroozi & Favaro 2016: 1000 permutations of maximal Hamming distance, 64-px tiles cut
        # from 75-px cells of a 225-px crop, SGD lr 0.01 (batch 256), ~350k iterations on ImageNet.
        # On STL-10 (96 px): 32-px cells, gap 8, jitter 4 → 20-px tiles resized to 64 px; 200 epochs.
        "full": dict(
            data="stl10",
            image_size=96,
            backbone="resnet18",
            optimizer="sgd",
            base_lr=0.05,
            weight_decay=5e-4,
            epochs=200,
            batch_size=256,
            knn_k=200,
            method_kwargs=dict(num_permutations=1000, gap=8, jitter=4, tile_size=64),
        ),
    },
    "simclr": {
        # Tiny: a few CPU minutes, so few steps: batch 128 (more steps per epoch), AdamW (learns much faster than
        # SGD/LARS in ~100 steps), τ = 0.2 and crops of 20–100% of the area (32-px scenes; 8% crops hold
        # little of the object). Chapter 5 ablates τ, the batch size, the head and the augmentations.
        "tiny": dict(
            optimizer="adamw",
            base_lr=0.002,
            weight_decay=1e-4,
            epochs=3,
            batch_size=128,
            warmup_epochs=0.5,
            method_kwargs=dict(temperature=0.2, crop_scale=(0.2, 1.0)),
        ),
        # Full: Chen et al. 2020 (SimCLR). Default setting (section 2.3, B.1): LARS, lr = 0.3 × batch/256, weight
        # decay 1e-6, 10 warm-up epochs then cosine decay. CIFAR-10 (appendix B.9): temperature 0.5, colour
        # strength s = 0.5, no blur at 32 px, batch 256–4096 and 100–1000 epochs swept; we take batch 512, 1000 epochs.
        # Global BN (section 2.3): BN mean and variance aggregated over all devices; with per-device statistics the
        # positive pairs, computed on one device, leak information that helps the loss but not the representation.
        "full": dict(
            optimizer="lars",
            base_lr=0.3,
            weight_decay=1e-6,
            epochs=1000,
            warmup_epochs=10,
            batch_size=512,
            sync_bn=True,
            method_kwargs=dict(temperature=0.5, jitter_strength=0.5, blur_p=0.0),
        ),
        # Speed run (the preset above; not measured yet: it needs a GPU and CIFAR-10). A public SimCLR ResNet-18 run
        # is reported to reach 90% kNN in 500 epochs (about 100 min on an A100; sslbook.references.COST, unverified):
        # the schedule is 500 epochs
        # and the run stops at the target. solo-learn's CIFAR SimCLR settings (scripts/pretrain/cifar/simclr.yaml):
        # LARS, lr 0.4 × batch/256, weight decay 1e-4, τ = 0.2 (sharper than the paper's 0.5, better for kNN), with
        # 10 warm-up epochs and cosine decay; colour strength 0.5 and no blur at 32 px as in the paper's CIFAR setting.
        # Not the same LARS: sslbook's is the SimCLR paper's (trust coefficient η = 0.001, no clipping), solo-learn's
        # takes η = 0.02 and clips the trust ratio at 1 (LARC). The rate is the first thing to tune on a GPU.
        # Under 10 minutes needs ≤ 1.2 s per 50,000-image epoch with the kNN checks off the clock:
        # `python -m sslbook bench simclr --preset speedrun --data random --compile` measures it.
        "speedrun": dict(
            optimizer="lars",
            base_lr=0.4,
            weight_decay=1e-4,
            warmup_epochs=10,
            sync_bn=True,
            method_kwargs=dict(temperature=0.2, jitter_strength=0.5, blur_p=0.0),
        ),
    },
    # Chapter 6: memory banks and momentum encoders. Tiny recipes: SimCLR's tiny recipe (AdamW, batch 128,
    # warm-up 0.5 epoch, τ = 0.2, crops of 20–100%), a fast key-encoder momentum (0.99: ~100 steps of memory
    # instead of the paper's 1000, in a run of ~120 steps) and a queue of 8 batches (few stale keys).
    "instdisc": {
        # Tiny: the bank is refreshed once per epoch, so a slot's positive is up to one epoch old. With
        # SimCLR's learning rate the encoder turned so far within an epoch that positives were no closer
        # than negatives (the loss rose above log(1+K); kNN 19–23% after 3 epochs, below random init);
        # a 10× smaller rate and 10 epochs let the bank keep up. Hue jitter 0.1 instead of the paper's 0.4.
        "tiny": dict(
            optimizer="adamw",
            base_lr=2e-4,
            weight_decay=1e-4,
            epochs=10,
            batch_size=128,
            warmup_epochs=0.5,
            method_kwargs=dict(bank_size=5000, num_negatives=4096, temperature=0.2, jitter=(0.4, 0.4, 0.4, 0.1)),
        ),
        # Full: Wu et al. 2018, sec. 4: SGD lr 0.03 (batch 256), momentum 0.9, wd 5e-4, 200 epochs,
        # τ = 0.07, bank momentum 0.5, 4096 negatives; bank_size = CIFAR-10's 50 000 training images.
        "full": dict(
            optimizer="sgd",
            base_lr=0.03,
            weight_decay=5e-4,
            epochs=200,
            batch_size=256,
            method_kwargs=dict(bank_size=50000, num_negatives=4096, temperature=0.07, bank_momentum=0.5),
        ),
    },
    "pirl": {
        # Tiny: the memory bank's constraint as for instdisc (small learning rate, more epochs); after 6
        # epochs the features were still below random init (kNN 38%, linear 66.5%), after 10 above it.
        "tiny": dict(
            optimizer="adamw",
            base_lr=2e-4,
            weight_decay=1e-4,
            epochs=10,
            batch_size=128,
            warmup_epochs=0.5,
            method_kwargs=dict(bank_size=5000, num_negatives=4096, temperature=0.2),
        ),
        # Full: Misra & van der Maaten 2020, sec. 4: SGD lr 0.12 for batch 1024 (= 0.03 per 256), wd 1e-4,
        # 800 epochs, 32 000 negatives, τ = 0.07, bank momentum 0.5, λ = 0.5.
        "full": dict(
            optimizer="sgd",
            base_lr=0.03,
            weight_decay=1e-4,
            epochs=800,
            batch_size=1024,
            method_kwargs=dict(bank_size=50000, num_negatives=32000, temperature=0.07, bank_momentum=0.5, lam=0.5),
        ),
    },
    "moco_v1": {
        "tiny": dict(
            optimizer="adamw",
            base_lr=0.002,
            weight_decay=1e-4,
            epochs=3,
            batch_size=128,
            warmup_epochs=0.5,
            method_kwargs=dict(queue_size=1024, momentum=0.99, temperature=0.2),
        ),
        # Full: He et al. 2020, sec. 4: SGD lr 0.03 (batch 256), wd 1e-4, m = 0.999, K = 65536, τ = 0.07,
        # 200 epochs, 128-d linear head, shuffled BN over 8 GPUs (bn_splits=8 on one). No sync_bn: BN per GPU
        # is the point of the shuffle (sec. 3.3).
        "full": dict(
            optimizer="sgd",
            base_lr=0.03,
            weight_decay=1e-4,
            epochs=200,
            batch_size=256,
            method_kwargs=dict(queue_size=65536, momentum=0.999, temperature=0.07, bn_splits=8),
        ),
    },
    "moco_v2": {
        # Tiny: no blur (32-px images).
        "tiny": dict(
            optimizer="adamw",
            base_lr=0.002,
            weight_decay=1e-4,
            epochs=3,
            batch_size=128,
            warmup_epochs=0.5,
            method_kwargs=dict(queue_size=1024, momentum=0.99, temperature=0.2, mlp_hidden=512, blur_p=0.0),
        ),
        # Full: Chen et al. 2020 (MoCo v2): SGD lr 0.03 × batch/256, wd 1e-4, m = 0.999, K = 65536, τ = 0.2,
        # MLP head 2048-d hidden, blur, cosine schedule, 200 epochs (batch 256). Shuffled BN as in v1, no sync_bn.
        "full": dict(
            optimizer="sgd",
            base_lr=0.03,
            weight_decay=1e-4,
            epochs=200,
            batch_size=256,
            method_kwargs=dict(queue_size=65536, momentum=0.999, temperature=0.2, mlp_hidden=2048, bn_splits=8),
        ),
    },
    "moco_v3": {
        # Tiny: the book's convnet (the method needs only a backbone with out_dim: a ViT or a CNN); full: vit_small. SimCLR's tiny
        # optimiser and crops of 20–100%, BYOL's asymmetric views without the blur (32-px images, as for every tiny
        # recipe), solarisation kept. Random init: kNN 40.5% / linear 68.7%. Measured on the shared 2-core CPU, seed 0:
        # the paper's views (crops of 8–100%, blur 1.0 / 0.1) 42.8% / 69.2%; crops of 20–100% without blur (this
        # recipe) 49.3% / 75.0%; without the solarisation too 49.9% / 76.6%.
        "tiny": dict(
            optimizer="adamw",
            base_lr=0.002,
            weight_decay=1e-4,
            epochs=3,
            batch_size=128,
            warmup_epochs=0.5,
            method_kwargs=dict(
                momentum=0.99, temperature=0.2, mlp_hidden=512, dim=128, crop_scale=(0.2, 1.0), blur_p=(0.0, 0.0)
            ),
        ),
        # Full: Chen, Xie & He 2021, ViT-S/16 on ImageNet at 224 px (kNN with k = 20, as DINO reports it):
        # AdamW lr 1.5e-4 × batch/256, wd 0.1, batch 4096, 300 epochs,
        # 40 warm-up epochs, τ = 0.2, m from 0.99 to 1 (cosine), MLPs 4096-d hidden, 256-d output.
        # (ResNet-50 recipe: LARS lr 0.3 × batch/256 … see the paper's appendix; τ = 1.0.) SyncBN in the MLP heads
        # (and a ResNet's BN), as in the official code (facebookresearch/moco-v3 main_moco.py, "Apply SyncBN").
        "full": dict(
            data="imagenet",
            image_size=224,
            knn_k=20,
            optimizer="adamw",
            base_lr=1.5e-4,
            weight_decay=0.1,
            epochs=300,
            warmup_epochs=40,
            batch_size=4096,
            backbone="vit_small",
            sync_bn=True,
            method_kwargs=dict(momentum=0.99, temperature=0.2, mlp_hidden=4096, dim=256),
        ),
    },
}

# Chapter 4: masked autoencoders.
RECIPES["mae"] = {
    # Tiny: a 0.45 M-parameter ViT (patch 8 → 16 patches of a 32×32 image) on the generated shapes; AdamW
    # with MAE's betas (0.9, 0.95) and weight decay 0.05, a higher learning rate than the paper's because
    # the run is a few hundred steps, 2 warm-up epochs, light decoder (width 64, 2 blocks), 75% masking.
    # The representation is the average of the patch tokens (pool="mean", as MAE fine-tunes): read at the [CLS]
    # token, the tiny run's kNN / linear probe were 16.4% / 22.4%, below the random ViT's 17.5% / 22.8%; mean-pooled
    # 19.4% / 27.4% against the random ViT's mean-pooled 17.3% / 20.3% (shared 2-core CPU, seed 0).
    "tiny": dict(
        backbone="vit_tiny",
        optimizer="adamw",
        base_lr=1e-3,
        weight_decay=0.05,
        epochs=20,
        warmup_epochs=2,
        method_kwargs=dict(
            mask_ratio=0.75, decoder_dim=64, decoder_depth=2, decoder_heads=4, norm_pix_loss=True, pool="mean"
        ),
    ),
    # Full, CIFAR-10 at 32 px: ViT-S (width 384, 12 blocks, 6 heads) with 4×4 patches, after the public
    # small-scale MAE recipe of IcarusWizard/MAE (ViT on CIFAR-10: 2000 epochs, 200 warm-up epochs, because
    # CIFAR-10 has 50k images against ImageNet's 1.28 M; batch 4096) with the paper's optimiser: AdamW,
    # base lr 1.5e-4 × batch/256, betas (0.9, 0.95), weight decay 0.05, 75% masking, normalised targets.
    # ImageNet (He et al. 2021, Table 8 / A.1): backbone="vit_base", data="imagenet", image_size=224,
    # batch_size=4096, epochs=800 (to 1600), warmup_epochs=40, decoder width 512 and depth 8, same optimiser.
    "full": dict(
        backbone="vit_small_p4",
        optimizer="adamw",
        base_lr=1.5e-4,
        weight_decay=0.05,
        epochs=2000,
        warmup_epochs=200,
        batch_size=4096,
        min_lr_ratio=0.0,
        method_kwargs=dict(
            mask_ratio=0.75, decoder_dim=512, decoder_depth=8, decoder_heads=16, norm_pix_loss=True, pool="mean"
        ),
    ),
}

# Chapter 3: reconstruction and colour.
RECIPES["context_encoder"] = {
    # Tiny: SGD (Adam at 2e-3 or 2e-4 pulled the encoder's features below random init in a few epochs on the
    # generated data), three random 10×10 holes per image (Pathak et al.'s random blocks), 3 epochs: kNN 39.8% /
    # linear 72.1% against random init's 40.5% / 68.7% and the BN-refreshed control's 42.9% / 72.5% (chapter 3).
    # Other runs on the shared 2-core CPU, kNN / linear, none clearly above that control: lr 0.02 × 4 epochs
    # 42.2% / 72.6%, × 6 epochs 41.9% / 72.1%; lr 0.01 × 6 epochs 42.6% / 72.5%; lr 0.02 × 4 epochs with six
    # holes 41.3% / 72.1%, with one 20×20 hole 41.5% / 72.8%, with random resized crops (50–100%) 41.3% / 72.1%;
    # one 16×16 hole, lr 0.05 × 4 epochs 40.9% / 71.6%.
    "tiny": dict(
        optimizer="sgd",
        base_lr=0.05,
        weight_decay=5e-4,
        epochs=3,
        method_kwargs=dict(rec_weight=0.999, adv_weight=0.001, holes=3, mask_size=10),
    ),
    # Full: Pathak et al. 2016 train with Adam, lr 2e-4 (the encoder 10× lower), λ_rec = 0.999, λ_adv = 0.001,
    # batch 64 on ImageNet; here CIFAR-10 + resnet18_cifar, a 16×16 random square hole (a quarter of the image).
    "full": dict(
        optimizer="adamw",
        base_lr=8e-4,
        weight_decay=0.0,
        epochs=200,
        batch_size=256,
        warmup_epochs=5,
        method_kwargs=dict(rec_weight=0.999, adv_weight=0.001, mask_size=16),
    ),
}
RECIPES["split_brain"] = {
    # Tiny: regression of ab from L and L from ab at 8×8, SGD lr 0.03, 4 epochs. Split-brain's own floor is its
    # two halves at random init (kNN 42.8% / linear 83.5% at seed 0, 43.9% / 83.9% at seed 1; the book's single
    # convnet: 40.5% / 68.7%). Measured on the shared 2-core CPU, kNN / linear: the paper's classification loss
    # (16×16 ab bins, 20 L bins) lost to that floor: lr 0.05, 2 epochs 29.9% / 77.0%; lr 0.01, 4 epochs 39.1% / 82.2%;
    # AdamW 5e-4, 4 epochs 29.1% / 76.2%; coarser bins (8×8 ab, 10 L), lr 0.01, 4 epochs: 44.3% / 84.1%, level with
    # it. Regression: lr 0.01, 4 epochs 50.6% / 87.0%; lr 0.03, 3 epochs 52.0% / 86.8%; lr 0.03, 4 epochs (this
    # recipe) 52.6% / 86.8% (seed 0), 49.0% / 86.7% (seed 1). Chapter 3 trains the classification loss beside it.
    "tiny": dict(
        optimizer="sgd",
        base_lr=0.03,
        weight_decay=5e-4,
        epochs=4,
        method_kwargs=dict(loss="regression", ab_bins=16, l_bins=20),
    ),
    # Full: Zhang et al. 2017 (ImageNet, AlexNet halves, Adam): classification losses, ab in 10-unit bins
    # (22×22 grid over [−110, 110]), L in 100 bins. CIFAR-10 + resnet18_cifar halves here.
    "full": dict(
        optimizer="adamw",
        base_lr=1e-3,
        weight_decay=1e-4,
        epochs=200,
        batch_size=256,
        warmup_epochs=5,
        method_kwargs=dict(loss="classification", ab_bins=22, l_bins=100, target_size=16),
    ),
}
RECIPES["video_colorization"] = {
    # Tiny: 64×64 generated clips (an 8×8 feature map with convnet), 32 clips per step, 16 colour bins per axis;
    # SGD (AdamW at 2e-3 left the image kNN at the random-init level after an epoch).
    "tiny": dict(
        optimizer="sgd",
        base_lr=0.05,
        weight_decay=5e-4,
        epochs=2,
        method_kwargs=dict(video_size=64, clip_batch=32, loss="classification", temperature=0.05),
    ),
    # Full: Vondrick et al. 2018 (Kinetics, 256×256 frames, ResNet-18 + 3D conv, 16 k-means colour clusters,
    # Adam lr 1e-3, batch 32 clips); here 128×128 generated clips with resnet18_cifar (a 16×16 map).
    "full": dict(
        optimizer="adamw",
        base_lr=1e-3,
        weight_decay=1e-4,
        epochs=100,
        batch_size=256,
        warmup_epochs=2,
        method_kwargs=dict(video_size=128, clip_batch=32, loss="classification", temperature=0.05),
    ),
}

# Chapter 7: contrastive predictive coding.
RECIPES["cpc"] = {
    # Tiny: SimCLR's tiny optimiser (AdamW, base lr 0.002, wd 1e-4, batch 128, 3 epochs). 16-px patches with stride 8:
    # a 3×3 grid whose per-step cost (9 patches of a quarter image each) is close to SimCLR's two views; 8-px patches
    # with stride 4 (a 7×7 grid, CPC v2's shape) took ~9× longer per step on the CPU (49 patches, a 6-block context,
    # 49-way grids of candidates) and leave the convnet a 1×1 map. Cosine scores with τ = 0.1 (raw dot products are
    # the paper's; normalised scores are the stable choice for a 100-step run, as in SimCLR). Steps k = 1, 2: with
    # k = 1 alone the grid-pooled features reached kNN 48% / linear 74% against 52% / 77% with k = 1, 2 (one run
    # each, 3 epochs). Per-patch colour jitter and grey as in relative position: overlapping neighbours share colours.
    "tiny": dict(
        optimizer="adamw",
        base_lr=0.002,
        weight_decay=1e-4,
        epochs=3,
        batch_size=128,
        warmup_epochs=0.5,
        method_kwargs=dict(patch=16, stride=8, steps=(1, 2), temperature=0.1, normalize=True),
    ),
    # Full: CPC v2's geometry (Hénaff et al. 2019; van den Oord et al. 2018, sec. 3.2): 64-px patches with a 32-px
    # stride (50% overlap) give a 7×7 grid, and the context predicts up to 5 rows below; per-patch augmentation
    # (colour dropping, jitter, grey). Scaled to STL-10 (96 px, one GPU): 32-px patches, 16-px stride, a 5×5 grid,
    # k = 1…4, a ResNet-18 (CIFAR stem) patch encoder, raw dot-product scores (τ = 1, no normalisation, as in the
    # paper). The optimiser (AdamW, base lr 4e-4 × batch/256, 200 epochs) is our choice, not the paper's numbers.
    "full": dict(
        data="stl10",
        image_size=96,
        backbone="resnet18_cifar",
        optimizer="adamw",
        base_lr=4e-4,
        weight_decay=1e-4,
        epochs=200,
        batch_size=256,
        warmup_epochs=5,
        knn_k=200,
        method_kwargs=dict(
            patch=32,
            stride=16,
            steps=(1, 2, 3, 4),
            temperature=1.0,
            normalize=False,
            context_width=512,
            crop_scale=(0.5, 1.0),
            drop_p=0.5,
        ),
    ),
}


# Chapter 9: self-distillation.
RECIPES["dino"] = {
    # Tiny: vit_tiny, batch 64, 6 epochs (468 steps), 2 local crops of 16 px, AdamW base lr 1e-3 (2.5e-4 after
    # batch scaling), K = 256, teacher momentum 0.99 → 1, teacher temperature 0.04 throughout (no warm-up).
    # Random-init vit_tiny: kNN 17.5% / linear 22.8%. Measured while tuning at batch 128 (60-step runs, 2 local crops):
    # lr 5e-4, momentum 0.96, τt 0.04 → 0.07, K = 1024: kNN 17.5% / linear 23.1%, targets near uniform;
    # lr 1e-3, momentum 0.9, τt 0.04: teacher and student fell onto one dimension by step ~12, then the centre
    # pushed them to uniform (18.6% / 21.8%); lr 2.5e-4 or 1e-4, momentum 0.99: teacher barely left its
    # initialisation (18.3% / 22.8%, 17.6% / 23.5%); lr 1e-3 with momentum 0.996 and clipping: 16.8% / 21.5%;
    # K = 256, 2 epochs (78 steps): 18.4% / 22.9%. More steps at batch 64 (shared 2-core CPU, seed 0): 3 epochs
    # 19.5% / 24.6% (base lr 2e-3: 18.6% / 24.5%), 6 epochs (this recipe) 19.6% / 25.4% (momentum 0.996: 19.2% /
    # 25.4%); batch 32, 3 epochs: 18.8% / 24.1%. Above the floor on both protocols by about two points: DINO
    # needs far more steps than minutes on 2 CPU cores give it (SimCLR on the same ViT, 78 steps: 22.7% / 28.3%).
    # On vit_tiny_conv (4-px patches, an 8×8 grid; random init 18.0% / 30.3%), this recipe: 24.2% / 33.6% in 349 s
    # of training (4.5× vit_tiny's 78 s, on the 2-core CPU shared with another run), and a supervised run (10
    # epochs) 81.9% / 82.2%. Their [CLS] attention on 500 test images (chapter 9's measures), block 1 → 4, the
    # share on the object's pixels (11.2% of the image) / the IoU of the 60%-mass map: DINO 11.0/.091, 11.9/.095,
    # 12.5/.092, 10.5/.078; random init (seeds 0, 1) 10.6-11.5 / .067-.120; supervised 46.1/.120, 16.2/.147,
    # 12.0/.112, 11.2/.096. At this budget no block of DINO's ViT singles the object out, and of the supervised
    # one only the first, whose patch tokens are still each patch's own content: the last block's maps, the
    # paper's, ignore the object in both. The chapter keeps vit_tiny and measures the same on its 4×4 grid.
    "tiny": dict(
        backbone="vit_tiny",
        optimizer="adamw",
        base_lr=1e-3,
        weight_decay=0.04,
        epochs=6,
        batch_size=64,
        warmup_epochs=0.3,
        method_kwargs=dict(
            out_dim=256,
            hidden_dim=512,
            bottleneck_dim=128,
            n_local=2,
            local_size=16,
            global_scale=(0.3, 1.0),
            local_scale=(0.05, 0.3),
            blur_p=(0.0, 0.0, 0.0),
            solarize_p=0.0,
            base_momentum=0.99,
            student_temp=0.1,
            teacher_temp=0.04,
            warmup_teacher_temp=0.04,
            warmup_teacher_temp_fraction=0.0,
            center_momentum=0.9,
        ),
    ),
    # Full: Caron et al. 2021, ViT-S/16 on ImageNet (sec. 4 "Implementation details", App. and the official
    # README's ViT-S/16 command): AdamW, batch 1024, lr 0.0005 × batch/256 after 10 linear warm-up epochs,
    # cosine to 1e-6 (min_lr_ratio 1e-6 / 2e-3 = 5e-4), weight decay 0.04 (the paper's cosine 0.04 → 0.4 is not
    # modelled: the trainer keeps weight decay fixed), 300 epochs, student temperature 0.1, teacher 0.04 → 0.07
    # over the first 30 epochs (0.1 of the run), teacher momentum 0.996 → 1 (cosine), centre momentum 0.9,
    # K = 65536, head 2048-d hidden / 256-d bottleneck, norm_last_layer=False for ViT-S with the last layer
    # frozen during the first epoch (1251 steps of batch 1024), multi-crop 2 × 224 px (scale 0.4–1) +
    # 10 × 96 px (scale 0.05–0.4), BYOL's blur (1.0, 0.1, 0.5) and solarisation (0.2 on the second global crop).
    "full": dict(
        data="imagenet",
        image_size=224,
        backbone="vit_small",
        optimizer="adamw",
        base_lr=5e-4,
        weight_decay=0.04,
        epochs=300,
        batch_size=1024,
        warmup_epochs=10,
        min_lr_ratio=5e-4,
        knn_k=20,
        grad_clip=3.0,
        method_kwargs=dict(
            out_dim=65536,
            hidden_dim=2048,
            bottleneck_dim=256,
            norm_last_layer=False,
            freeze_last_layer_steps=1251,
            n_local=10,
            local_size=96,
            global_scale=(0.4, 1.0),
            local_scale=(0.05, 0.4),
            blur_p=(1.0, 0.1, 0.5),
            solarize_p=0.2,
            base_momentum=0.996,
            student_temp=0.1,
            teacher_temp=0.07,
            warmup_teacher_temp=0.04,
            warmup_teacher_temp_fraction=0.1,
            center_momentum=0.9,
        ),
    ),
}


# Adversarial and transformation-decoding methods.
RECIPES["adco"] = {
    # Tiny: MoCo v2's tiny recipe (AdamW, base lr 0.002, wd 1e-4, batch 128, warm-up 0.5 epoch, momentum 0.99, MLP
    # head 512, no blur at 32 px) for 10 epochs, with 1024 negative adversaries, the paper's two temperatures and the
    # adversaries moved by their own SGD (momentum 0.9, lr 1.0), as the official code does. Measured on the shared
    # 2-core CPU, seed 0, against random init's kNN 40.5% / linear 68.7% (BN-refreshed 46.3% / 73.7%):
    # - first version, the adversaries as parameters of the run's AdamW at a multiple of its rate, 3 epochs: 0.1×
    #   42.4% / 70.7%, 1× 42.9% / 70.9%, 3× 47.0% / 72.1%, 10× 33.6% / 53.9% (τ 0.2, τ_n 0.04: 33.5% / 55.1%); SGD
    #   for everything (base lr 0.06, adversaries 100× as in the paper) 39.7% / 65.4%. Adam moves every adversary at
    #   the full rate whatever its gradient: at 10× they chase the queries and the positives fall apart (cosine 0.1
    #   at step 14); at ≤ 3× the encoder pulls away and the adversaries' loss is ~0 from the second epoch on (30
    #   epochs of the 3× recipe: 49.1% / 74.3%, its monitor flat from epoch 4): the game was not played.
    # - the adversaries' own SGD (step ∝ gradient), 3 epochs, lr 0.03 / 0.1 / 0.3 / 1 / 3: 44.8% / 67.1%, 45.8% /
    #   70.1%, 45.8% / 70.7%, 45.8% / 70.9%, 43.6% / 67.5% (these five also moved the rows during the first 8 steps,
    #   before every row held a key; the method now waits for that); the adversaries' loss stays at 6–20 (the game is
    #   played) and the encoder's falls from ~5.5 to ~2.3; 10 epochs (390 steps, ~45 s of training here), lr 0.3 /
    #   1 / 3: 57.4% / 74.6%, 58.6% / 75.9% (this recipe), 55.9% / 74.2%.
    # - the same 10 epochs of MoCo v2's tiny recipe: 63.1% / 78.5%; of the AdamW version above (3×): 46.0% / 71.6%.
    # - python -m sslbook compare adco --seeds 3: kNN 56.5% ± 6.9% against the floor's 45.3% ± 5.5% (+11.2, Welch
    #   p = 0.049), linear 72.3% ± 6.6% against 73.4% ± 3.5% (−1.1): beyond the noise on kNN only. Per seed over
    #   the BN-refreshed floor of the same seed: kNN +12.2, +9.5, +11.8; linear +2.2, −5.0, −0.6 (seed 1's random
    #   network is the weakest of the three: 37.5% / 64.6%, and its run too: 48.8% / 64.7%).
    "tiny": dict(
        optimizer="adamw",
        base_lr=0.002,
        weight_decay=1e-4,
        epochs=10,
        batch_size=128,
        warmup_epochs=0.5,
        method_kwargs=dict(
            num_negatives=1024,
            momentum=0.99,
            temperature=0.12,
            negative_temperature=0.02,
            negatives_lr=1.0,
            negatives_momentum=0.9,
            mlp_hidden=512,
            blur_p=0.0,
        ),
    ),
    # Full: Hu, Wang, Hu & Qi 2021 (AdCo), the ImageNet single-crop command of the official code's README
    # (maple-research-lab/AdCo: --lr=0.03 --memory_lr=3 --moco_t=0.12 --mem_t=0.02, 65,536 negatives, 200 epochs):
    # SGD lr 0.03 (batch 256), τ = 0.12, τ_n = 0.02, the adversaries moved by their own SGD at lr 3 (100× the
    # encoder's) with momentum 0.9 (the code's --momentum, which it uses for both); the rest as MoCo v2 (wd 1e-4,
    # m = 0.999, MLP head 2048-d hidden, shuffled BN). The code decays the adversaries (--mem_wd 1e-4) and
    # normalises them where it reads them; here they are put back on the unit sphere after each step.
    "full": dict(
        optimizer="sgd",
        base_lr=0.03,
        weight_decay=1e-4,
        epochs=200,
        batch_size=256,
        method_kwargs=dict(
            num_negatives=65536,
            momentum=0.999,
            temperature=0.12,
            negative_temperature=0.02,
            negatives_lr=3.0,
            negatives_momentum=0.9,
            mlp_hidden=2048,
            bn_splits=8,
        ),
    ),
}
RECIPES["aet"] = {
    # Tiny: the contrastive recipes' tiny optimiser (AdamW, base lr 0.002, wd 1e-4, batch 128, warm-up 0.5 epoch), 12
    # epochs, affine transformations with the paper's ranges, the warped image's corners filled with its edge pixels
    # (padding="border"). Measured on the shared 2-core CPU (kNN / linear probe; floors: the same network at random
    # init, and the same weights with BatchNorm statistics measured on the training images, bn_refresh):
    #   floors, seeds 0, 1, 2: random init 40.5 / 68.7, 37.5 / 64.7, 44.1 / 72.3; BN-refreshed 46.4 / 73.7,
    #   39.3 / 69.8, 50.2 / 76.8 (the floors move by several points from one initialisation to the next).
    #   Black corners (padding="zeros", grid_sample's default; the paper's code fills them with grey), seed 0:
    #   6 epochs 33.3 / 68.1 (the decoder's error ½‖t̂ − t‖² from 1.66 to 0.13), 3 epochs 30.2 / 62.6, projective
    #   3 epochs 30.4 / 57.7, 12 epochs 36.7 / 69.4; RotNet's tiny SGD (lr 0.1, wd 5e-4, batch 256, 4 epochs)
    #   18.1 / 21.2 with the error stuck at 1.14, the score of always predicting the mean transformation. The filled
    #   corners outline the image's border moved by t, a cue to t that needs no object.
    #   Edge-filled corners, 6 epochs: "border" 39.9 / 72.7, 37.7 / 67.4, 42.2 / 72.8 (seeds 0-2); "reflection"
    #   40.2 / 71.5, 35.8 / 66.5, 40.2 / 69.9. Border, 8 epochs: 41.2 / 73.5, 38.7 / 68.9, 42.8 / 72.8 (linear +4.8,
    #   +4.2, +0.5 over each seed's random init: paired t = 2.3, p ≈ 0.07).
    #   This recipe (border, 12 epochs, ~100 s): 42.1 / 75.5, 41.8 / 72.0, 46.3 / 74.7 (seeds 0-2). Linear probe
    #   above each seed's random init by +6.8, +7.4, +2.4 (paired t = 3.5, one-sided p ≈ 0.04; Welch's t on the
    #   unpaired means 2.3, p ≈ 0.06), kNN by +1.6, +4.3, +2.2; against the BN-refreshed floor +1.8, +2.3, −2.1
    #   (linear) and −4.3, +2.5, −4.0 (kNN): not beyond it. So AET learns something a random network lacks, but at
    #   this budget not more than measuring the BatchNorm statistics gives.
    "tiny": dict(
        optimizer="adamw",
        base_lr=0.002,
        weight_decay=1e-4,
        epochs=12,
        batch_size=128,
        warmup_epochs=0.5,
        method_kwargs=dict(transforms=("affine",), hidden=256, padding="border"),
    ),
    # Full: Zhang, Qi, Wang & Luo 2019 (AET), CIFAR-10, the defaults of the official code (maple-research-lab/AET
    # cifar/affine/main.py): SGD (Nesterov there), momentum 0.9, wd 5e-4, batch 512, lr 0.1, 1500 epochs (there with
    # steps at 240, 480, 640, 800 and 1000 epochs, here the trainer's cosine schedule), affine transformations.
    # The corners are filled with the edge pixels as at tiny (the official code fills them with grey; not compared here).
    "full": dict(
        optimizer="sgd",
        base_lr=0.05,  # 0.1 for batch 512, as a rate per 256 images (the trainer scales by batch / 256)
        weight_decay=5e-4,
        epochs=1500,
        batch_size=512,
        method_kwargs=dict(transforms=("affine",), hidden=512, padding="border"),
    ),
}
RECIPES["bigbigan"] = {
    # Tiny: Adam with BigGAN's betas (0, 0.999; the class declares them), no weight decay (GAN practice), lr 2e-4
    # (base 4e-4 × 128 / 256) for every player, batch 128, 4 epochs, a 64-d latent and a small generator (width 32).
    # Measured on the shared 2-core CPU, seed 0, against random init's kNN 40.5% / linear 68.7%: this recipe 23.2% / 44.3%
    # (by the end D tells the fakes apart 99% of the time); base lr 1e-3 31.3% / 43.8%; base lr 1e-4 31.5% / 64.0%; D at
    # half the rate 25.3% / 45.5%; a spectrally normalised D (spectral_norm=True, as in BigGAN) 24.4% / 45.7%, and
    # 8 epochs of it 24.6% / 42.7%: more steps of this game do not bring the encoder back to random init's features.
    # BigGAN's two time-scale rates with the spectral norm (base lr 1e-4, D 4× faster: disc_lr_scale 4): 4 epochs
    # 33.0% / 65.6%, the closest to random init yet, and 8 epochs with a wider generator (gen_width 64) 28.5% / 58.7%:
    # again the longer game moves the encoder further below its starting point.
    # BiGAN's "latent regressor" trained jointly (Donahue, Krähenbühl & Darrell 2017 compare against it): E also
    # regresses z from G(z), ‖E(G(z)) − z‖² with G held fixed, latent_regression 1: 39.8% / 71.4%: the encoder no
    # longer falls below random init, but it does not learn either: the regression error stays at ~60, near the 64
    # of predicting 0 (E recovers almost nothing of z from G(z)), and D tells the fakes apart 100% of the time.
    # Weight 0.1: 31.9% / 62.3%; weight 1 with the spectral norm and the two time-scale rates above (base lr 1e-4,
    # D 4×): 41.4% / 72.5%; weight 1 for 8 epochs: 39.6% / 72.3%, the error still ~61: the term holds E near its
    # initialisation in proportion to its weight (a regulariser), none of these runs is above the BN-refreshed floor
    # (46.3% / 73.7%).
    # Those latent-regression runs let E(G(z)) pass the encoder's BatchNorm layers in training mode, so the fakes
    # (which D rejects every time: not images like the real ones) entered the running statistics the evaluation
    # normalises with. With them held (bn_statistics_held), latent_regression 1, seeds 0, 1, 2 (compare bigbigan
    # --seeds 3 --set latent_regression=1.0), against each seed's random init and BN-refreshed floor:
    #   kNN     41.0 / 36.8 / 47.2   random init 40.5 / 37.5 / 44.1   BN-refreshed 46.4 / 39.3 / 50.2
    #   linear  73.8 / 68.8 / 76.0   random init 68.7 / 64.6 / 72.3   BN-refreshed 73.7 / 69.7 / 76.8
    # Above its own random init on the linear probe with every seed (+5.1, +4.2, +3.7), and level with the
    # BN-refreshed floor (−0.1, −0.9, −0.8; Welch p = 0.57): what the encoder gains over its initialisation is the
    # BatchNorm statistics of the real images, nothing the game taught it. This recipe keeps the latent regressor
    # (E is otherwise pushed below its initialisation, 26.7% / 47.6% with seed 0). A GAN of a few hundred steps
    # does not give its encoder useful features: its generator's samples carry next to nothing of z that E could
    # read; the stored long run (10× the epochs) measures whether more steps change that.
    "tiny": dict(
        optimizer="adamw",
        base_lr=4e-4,
        weight_decay=0.0,
        epochs=4,
        batch_size=128,
        method_kwargs=dict(
            z_dim=64, gen_width=32, disc_width=32, disc_hidden=256, enc_hidden=256, latent_regression=1.0
        ),
    ),
    # Full: BigBiGAN (Donahue & Simonyan 2019) keeps BigGAN's optimiser (Brock, Donahue & Simonyan 2019): Adam with
    # β = (0, 0.999), lr 2e-4, no weight decay, a 120-d N(0, I) latent; it trains BigGAN's networks at batch 2048 on
    # ImageNet. Here CIFAR-10 at 32 px with the small DCGAN-style networks of this file, batch 256 (base lr 2e-4),
    # 400 epochs (~78k steps): a budget of the book's, not the paper's.
    "full": dict(
        optimizer="adamw",
        base_lr=2e-4,
        weight_decay=0.0,
        epochs=400,
        batch_size=256,
        method_kwargs=dict(z_dim=120, gen_width=64, disc_width=64, disc_hidden=512, enc_hidden=512),
    ),
}
# Semi-supervised learning: a few labels (``label_fraction``, the same class-balanced subset for every method of
# a fraction and seed) and the rest of the training images unlabelled. ``supervised --label-fraction F`` is the
# supervised-only baseline on the same labels.
RECIPES["s4l_rotation"] = {
    # Tiny: 1% of the labels (50 images), batch 128 plus a labelled batch of 64 of its own each step (the paper draws
    # equal labelled and unlabelled batches; at the data's rate a batch of 128 holds ~1 labelled image), 4 epochs
    # (156 steps), the supervised tiny optimiser (SGD lr 0.1, wd 5e-4), w = 1 as in the paper, one random rotation
    # per image besides the upright copy (2 images per image a step rather than 4), and the classifier on the
    # upright copies only (classify_rotated=False; the paper's also sees the rotated copies of a labelled image).
    # Measured (seed 0, this 2-core CPU; "classifier" = the method's own classifier on the 2,000 test images, kNN and
    # linear probe as every run, the probe on all training labels), against supervised alone on the same labels,
    # batches and steps (supervised --label-fraction 0.01, labelled_batch 64, 4 epochs, batch 128): 33.9% / 53.5% /
    # 69.2%. This recipe: 37.5% / 57.1% / 77.0%, 51 s. Seeds 0, 1, 2 (each seed its own labelled subset), classifier:
    # this recipe 37.5%, 31.7%, 37.2% (35.5% ± 3.3%) against supervised-only's 33.9%, 32.3%, 31.1% (32.4% ± 1.4%):
    # +3.1 points, within the spread over seeds (Welch's t = 1.5, one-sided p ≈ 0.1). With the classifier on the
    # rotated copies too (the paper's
    # way): w = 1 28.4% / 45.4% / 65.7%, w = 0.3 27.0% / 44.4% / 65.6%, w = 0 (no rotation loss at all) 26.0% / 39.3% /
    # 59.6%: with 50 labels, asking the classifier to name the class of every rotated copy costs more than the
    # rotation loss gives (the test images are upright, and RotNet's own features are below random init's on these
    # scenes: chapter 2). Before the labelled batch (labelled images at the data's rate, 10% of the labels, 6 epochs,
    # rotated copies classified): 61.0% / 72.1% / 84.7% against supervised's 61.4% / 72.5% / 80.6%; at 1% both at
    # chance (11.3% and 10.5%).
    "tiny": dict(
        optimizer="sgd",
        base_lr=0.1,
        weight_decay=5e-4,
        epochs=4,
        batch_size=128,
        label_fraction=0.01,
        method_kwargs=dict(weight=1.0, all_rotations=False, labelled_batch=64, classify_rotated=False),
    ),
    # Full: Zhai et al. 2019 on ILSVRC-2012 with 10% of the labels (the official configuration s4l_rotation.sh:
    # 128,000 labelled images, a labelled and an unlabelled batch of 256 each, SGD lr 0.03 not scaled with the batch,
    # wd 1e-3, 5 warm-up epochs, 200 epochs with steps at 140/160/180 (here cosine), rotation weight 1 on both
    # batches, all four rotations). The paper's network is a 4x wide ResNet-50v2; the book has ResNet-50 (v1, 1x).
    "full": dict(
        data="imagenet",
        image_size=224,
        backbone="resnet50",
        optimizer="sgd",
        base_lr=0.03,
        weight_decay=1e-3,
        momentum=0.9,
        epochs=200,
        warmup_epochs=5,
        batch_size=256,
        label_fraction=0.1,
        knn_k=20,
        method_kwargs=dict(weight=1.0, all_rotations=True, labelled_batch=256),
    ),
}
RECIPES["s4l_exemplar"] = {
    # Tiny: 1% of the labels (50 images), batch 64 plus a labelled batch of 32 of its own each step, 4 copies of each
    # image (the paper's 8 would double the step), 2 epochs (156 steps), a 128-d embedding, SGD lr 0.1, wd 5e-4, w = 1.
    # Measured (seed 0, the 2-core CPU shared with other runs, as for s4l_rotation): classifier 58.7%, kNN 77.5%,
    # linear 86.7%, against supervised alone on the same labels (4 epochs of batch 128 + 64 labelled: 33.9% / 53.5% /
    # 69.2%). Before the labelled batch: 10% labels 36.3% / 61.8% / 76.8%, 1% labels 10.8% / 19.0% / 29.2% (chance).
    "tiny": dict(
        optimizer="sgd",
        base_lr=0.1,
        weight_decay=5e-4,
        epochs=2,
        batch_size=64,
        label_fraction=0.01,
        method_kwargs=dict(weight=1.0, copies=4, dim=128, labelled_batch=32),
    ),
    # Full: Zhai et al. 2019 on ILSVRC-2012 with 10% of the labels (the official configuration s4l_exemplar.sh:
    # 8 inception crops with HSV noise and flips per image, a 1000-d embedding, batch-hard triplet loss with a soft
    # margin on L2-normalised embeddings, weight 1 on both batches, batches of 512, SGD lr 0.1 not scaled with the
    # batch (base_lr 0.05 here, x 512/256), wd 1e-3, 10 warm-up epochs, 200 epochs with steps at 140/160/180, here
    # cosine). The paper's network is a 4x wide ResNet-50v2; the book has ResNet-50 (v1, 1x).
    "full": dict(
        data="imagenet",
        image_size=224,
        backbone="resnet50",
        optimizer="sgd",
        base_lr=0.05,
        weight_decay=1e-3,
        momentum=0.9,
        epochs=200,
        warmup_epochs=10,
        batch_size=512,
        label_fraction=0.1,
        knn_k=20,
        method_kwargs=dict(weight=1.0, copies=8, dim=1000, labelled_batch=512),
    ),
}
RECIPES["mixmatch"] = {
    # Tiny: 1% of the labels (50 images), batch 128 plus a labelled batch of 64 of its own each step, the paper's
    # T = 0.5, K = 2, α = 0.75 and λ_U = 75, ramped up over the whole run, Adam at the paper's 0.002 for a batch of 64
    # (base_lr 0.008 at batch 256; AdamW with wd 0.02), 4 epochs (156 steps, ~0.45 s a step on a 2-core CPU).
    # Measured (seed 0, this 2-core CPU; classifier = the method's own on the 2,000 test images; kNN, linear probe):
    # this recipe 65.6% / 85.5% / 91.6% (84 s with the evaluation; seeds 1 and 2: 53.4% and 73.3%, so 64.1% ± 10.0%
    # against supervised-only's 32.4% ± 1.4% over the same three seeds, Welch's t = 5.4); 6 epochs 71.9% / 89.0% /
    # 93.6%; 6 epochs with λ_U = 10: 64.1% / 81.3% / 89.6%; supervised alone on the same labels, batches and steps
    # (4 epochs): 33.9% / 53.5% / 69.2%. Before the labelled batch, the labelled images came at the data's rate (~1 in a batch of 128 at
    # 1%, ~13 against 256 unlabelled copies at 10%): with λ_U = 75 the guessed labels collapsed onto one class (the
    # mean largest guessed probability reached 0.99 by step 60, the classifier predicted one class for every test
    # image, 10.0%), and λ_U = 10 at 10% of the labels gave 68.2% against supervised's 61.4%. The paper's moving
    # average of the weights (ema_decay) is off here: with ema_decay 0.99 (a window of ~100 of the 156 steps) the
    # averaged classifier scored 43.6% against the online one's 65.6% in the same run (seed 0): with λ_U ramped up over
    # the whole run the network improves most in its last steps, which an average over them lags behind.
    "tiny": dict(
        optimizer="adamw",
        base_lr=0.008,
        weight_decay=0.02,
        epochs=4,
        batch_size=128,
        label_fraction=0.01,
        method_kwargs=dict(k=2, temperature=0.5, alpha=0.75, lambda_u=75.0, rampup_steps=156, labelled_batch=64),
    ),
    # Long (the tiny recipe ×10 epochs): λ_U ramped up over the whole run, as at tiny.
    "long": dict(method_kwargs=dict(rampup_steps=1560)),
    # Full: Berthelot et al. 2019, CIFAR-10 with 250 labels (label_fraction 0.005; 4,000 labels: 0.08): Adam lr
    # 0.002 at batch 64 (base_lr 0.008 here), T = 0.5, K = 2, α = 0.75, λ_U = 75 for CIFAR-10 ramped up linearly over
    # the first 16,000 steps; decoupled weight decay (AdamW, wd 0.02: the official code decays the weights by wd x lr a
    # step; the value is not checked against the paper here); the moving average of the weights that the paper
    # evaluates, decay 0.999 (ema_decay). Not reproduced: the WideResNet-28-2 (the book has no WideResNet; the CIFAR
    # ResNet-18 instead) and the paper's length of training (here 1,000 epochs of 781 steps, about 780k steps). Its
    # labelled and unlabelled batches of 64 each are: labelled_batch 64 beside the batch.
    "full": dict(
        optimizer="adamw",
        base_lr=0.008,
        weight_decay=0.02,
        epochs=1000,
        batch_size=64,
        label_fraction=0.005,
        method_kwargs=dict(
            k=2, temperature=0.5, alpha=0.75, lambda_u=75.0, rampup_steps=16000, labelled_batch=64, ema_decay=0.999
        ),
    ),
}


def current_preset() -> str:
    """The preset the book runs at: ``$SSLBOOK_PRESET`` or ``tiny``."""
    name = os.environ.get(PRESET_ENV, "tiny")
    if name not in BOOK_PRESETS:
        raise ValueError(
            f"{PRESET_ENV}={name!r} is not a preset of the book; choose one of {list(BOOK_PRESETS)}"
            + (" (speedrun is for `python -m sslbook train METHOD --preset speedrun`)" if name in PRESETS else "")
        )
    return name


def plain(value):
    """A setting as JSON or a checkpoint gives it back: tuples as lists, so a stored config compares equal to
    today's."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def run_dir(name: str, preset: str | None = None) -> str:
    """Where the book keeps the run called ``name`` at ``preset``: ``$SSLBOOK_RUNS/<preset>/<name>``
    (default: the repository's ``runs/`` folder, git-ignored).

    Chapters train with ``train(method, out=run_dir(name), resume=True)``: the first chapter that
    needs a run trains it and checkpoints it; a later chapter (or a re-execution) that asks for the
    same run with the same settings finds the finished checkpoint and loads it with its stored metrics
    (evaluated again only if the evaluation settings differ): "train, or load what was trained".
    Delete the folder to train again.
    """
    preset = preset or current_preset()
    root = Path(os.environ[RUNS_ENV]) if os.environ.get(RUNS_ENV) else _REPO_RUNS
    return str(root / preset / name)


def get_preset(name: str | None = None) -> dict:
    name = name or current_preset()
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name])


def _long_recipe(method: str) -> dict:
    """The ``long`` recipe of ``method``: its tiny recipe with LONG_FACTOR× the epochs (warm-up scaled alike),
    the learning curve checked about 20 times, then whatever ``RECIPES[method]["long"]`` changes."""
    values = get_preset("tiny")
    values.update(RECIPES.get(method, {}).get("tiny", {}))
    epochs = values["epochs"] * LONG_FACTOR
    long = {
        **RECIPES.get(method, {}).get("tiny", {}),
        "epochs": epochs,
        "warmup_epochs": values.get("warmup_epochs", 0.0) * LONG_FACTOR,
        "monitor_every": max(1, round(epochs / 20)),
    }
    own = dict(RECIPES.get(method, {}).get("long", {}))
    if "method_kwargs" in own:
        own["method_kwargs"] = {**long.get("method_kwargs", {}), **own["method_kwargs"]}
    long.update(own)
    return long


def resolve(method: str, preset: str | None = None, **overrides) -> TrainConfig:
    """The run's config: preset, then the method's recipe for it, then ``overrides`` (None = keep)."""
    preset = preset or current_preset()
    values = get_preset(preset)
    if preset not in (*BOOK_PRESETS, "long") and preset not in RECIPES.get(method, {}):
        have = sorted(m for m, r in RECIPES.items() if preset in r)
        raise ValueError(f"{method} has no {preset!r} recipe; the methods that have one: {', '.join(have) or 'none'}")
    if preset == "long":
        values.update(_long_recipe(method))
    else:
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
        raise ConfigError(
            f"unknown training options: {', '.join(sorted(unknown))}; "
            f"the options are {', '.join(f.name for f in dataclasses.fields(TrainConfig))}"
        )
    return validate(
        TrainConfig(method=method, preset=preset, method_kwargs=method_kwargs, data_kwargs=data_kwargs, **values)
    )


# ----------------------------------------------------------------------------------------------------------------
# Validation: every setting of a run is checked here, once, before anything is built or trained.
# ----------------------------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A setting that cannot give a meaningful run; the message names the option and what it accepts."""


# the command-line flag of each TrainConfig field that has one (messages name the flag a user typed)
CLI_FLAGS = {
    "data": "--data",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "base_lr": "--lr",
    "backbone": "--backbone",
    "max_steps": "--max-steps",
    "num_workers": "--workers",
    "seed": "--seed",
    "grad_clip": "--grad-clip",
    "out": "--out",
    "data_on": "--data-on",
    "target_knn": "--target-knn",
    "checkpoint_every": "--checkpoint-every",
    "bn_refresh": "--bn-refresh",
    "preset": "--preset",
    "label_fraction": "--label-fraction",
    "method": "METHOD",
}
OPTIMIZERS = ("sgd", "adamw", "lars")
EVAL_PROTOCOLS = ("knn", "linear", "kmeans")


def _name(key: str) -> str:
    flag = CLI_FLAGS.get(key)
    return f"{key} ({flag})" if flag and flag != "METHOD" else key


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v) -> bool:
    return _is_number(v) and math.isfinite(v)


def _check(ok: bool, key: str, wants: str, value) -> None:
    if not ok:
        raise ConfigError(f"{_name(key)} must be {wants}, got {value!r}")


def validate(cfg: "TrainConfig") -> "TrainConfig":
    """Check every option of ``cfg`` and every method keyword; raise :class:`ConfigError` naming the first
    bad one. Returns ``cfg`` (with a ``folder:`` path made absolute, so the run can be evaluated from anywhere).

    Called by :func:`resolve` and by the trainer before it builds anything, so a bad setting never costs a
    minute of training and never reaches the optimiser (a negative clipping norm, say, would flip the
    gradients and train uphill)."""
    from sslbook.methods import REGISTRY, get_method

    _check(
        isinstance(cfg.method, str) and cfg.method in REGISTRY,
        "method",
        f"one of {', '.join(sorted(REGISTRY))}",
        cfg.method,
    )
    _check(cfg.preset in PRESETS, "preset", f"one of {', '.join(sorted(PRESETS))}", cfg.preset)
    _check(isinstance(cfg.data, str) and bool(cfg.data), "data", "a data set name or folder:PATH", cfg.data)
    if cfg.data.startswith("folder:"):
        path = cfg.data[len("folder:") :]
        _check(bool(path), "data", "folder:PATH with a path", cfg.data)
        cfg.data = "folder:" + str(Path(path).expanduser().resolve())
    _check(isinstance(cfg.data_kwargs, dict), "data_kwargs", "a dict", cfg.data_kwargs)
    _check(isinstance(cfg.backbone, str) and bool(cfg.backbone), "backbone", "a backbone name", cfg.backbone)
    _check(_is_int(cfg.image_size) and cfg.image_size >= 8, "image_size", "an integer >= 8", cfg.image_size)
    _check(
        _is_int(cfg.epochs) and cfg.epochs >= 0,
        "epochs",
        "an integer >= 0 (0 evaluates the untrained backbone)",
        cfg.epochs,
    )
    _check(_is_int(cfg.batch_size) and cfg.batch_size >= 1, "batch_size", "a positive integer", cfg.batch_size)
    _check(cfg.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}", cfg.optimizer)
    _check(_finite(cfg.base_lr) and cfg.base_lr > 0, "base_lr", "a finite number > 0", cfg.base_lr)
    _check(
        _finite(cfg.min_lr_ratio) and 0 <= cfg.min_lr_ratio <= 1, "min_lr_ratio", "a number in [0, 1]", cfg.min_lr_ratio
    )
    _check(
        _finite(cfg.weight_decay) and cfg.weight_decay >= 0, "weight_decay", "a finite number >= 0", cfg.weight_decay
    )
    _check(_finite(cfg.momentum) and 0 <= cfg.momentum < 1, "momentum", "a number in [0, 1)", cfg.momentum)
    _check(
        _finite(cfg.warmup_epochs) and cfg.warmup_epochs >= 0,
        "warmup_epochs",
        "a finite number >= 0",
        cfg.warmup_epochs,
    )
    _check(
        cfg.max_steps is None or (_is_int(cfg.max_steps) and cfg.max_steps >= 1),
        "max_steps",
        "a positive integer (or omitted: every epoch)",
        cfg.max_steps,
    )
    _check(_is_int(cfg.seed) and cfg.seed >= 0, "seed", "an integer >= 0", cfg.seed)
    _check(_is_int(cfg.num_workers) and cfg.num_workers >= 0, "num_workers", "an integer >= 0", cfg.num_workers)
    _check(cfg.augment_on in ("device", "loader"), "augment_on", "one of device, loader", cfg.augment_on)
    _check(cfg.data_on in ("auto", "device", "loader"), "data_on", "one of auto, device, loader", cfg.data_on)
    for key in ("compile", "amp", "sync_bn", "resume", "overwrite", "progress", "bn_refresh"):
        _check(isinstance(getattr(cfg, key), bool), key, "true or false", getattr(cfg, key))
    _check(
        cfg.grad_clip is None or (_finite(cfg.grad_clip) and cfg.grad_clip > 0),
        "grad_clip",
        "a finite norm > 0 (or omitted: no clipping)",
        cfg.grad_clip,
    )
    _check(
        cfg.out is None or (isinstance(cfg.out, (str, os.PathLike)) and str(cfg.out) != ""),
        "out",
        "a folder path",
        cfg.out,
    )
    if cfg.out is not None:
        cfg.out = str(cfg.out)
    _check(
        not (cfg.resume and cfg.overwrite),
        "overwrite",
        "off when resuming (--resume continues the run, --overwrite replaces it: choose one)",
        cfg.overwrite,
    )
    _check(
        cfg.checkpoint_every is None or (_is_int(cfg.checkpoint_every) and cfg.checkpoint_every >= 1),
        "checkpoint_every",
        "a positive number of steps (or omitted: every epoch)",
        cfg.checkpoint_every,
    )
    _check(_is_int(cfg.log_every) and cfg.log_every >= 1, "log_every", "a positive integer", cfg.log_every)
    protocols = tuple(cfg.eval_protocols) if isinstance(cfg.eval_protocols, (list, tuple)) else None
    _check(
        protocols is not None and set(protocols) <= set(EVAL_PROTOCOLS),
        "eval_protocols",
        f"a list of {', '.join(EVAL_PROTOCOLS)}",
        cfg.eval_protocols,
    )
    cfg.eval_protocols = protocols
    _check(_is_int(cfg.knn_k) and cfg.knn_k >= 1, "knn_k", "a positive integer", cfg.knn_k)
    _check(
        _finite(cfg.knn_temperature) and cfg.knn_temperature > 0,
        "knn_temperature",
        "a finite number > 0",
        cfg.knn_temperature,
    )
    _check(
        _is_int(cfg.linear_epochs) and cfg.linear_epochs >= 1, "linear_epochs", "a positive integer", cfg.linear_epochs
    )
    _check(
        _is_int(cfg.eval_batch_size) and cfg.eval_batch_size >= 1,
        "eval_batch_size",
        "a positive integer",
        cfg.eval_batch_size,
    )
    _check(
        _is_int(cfg.eval_bootstrap) and (cfg.eval_bootstrap == 0 or cfg.eval_bootstrap >= 2),
        "eval_bootstrap",
        "a number of test-set resamples >= 2 (or 0: no bootstrap)",
        cfg.eval_bootstrap,
    )
    _check(
        not cfg.bn_refresh or cfg.epochs == 0,
        "bn_refresh",
        "used with epochs 0 (it is the random-init control; to refresh a trained backbone: "
        "python -m sslbook eval CHECKPOINT --bn-refresh)",
        cfg.bn_refresh,
    )
    _check(
        _is_int(cfg.monitor_knn) and cfg.monitor_knn >= 0,
        "monitor_knn",
        "an integer >= 0 (0: no kNN monitor)",
        cfg.monitor_knn,
    )
    _check(
        _is_int(cfg.monitor_every) and cfg.monitor_every >= 1,
        "monitor_every",
        "the number of epochs between kNN checks (an integer >= 1)",
        cfg.monitor_every,
    )
    if cfg.target_knn is not None:
        _check(
            _finite(cfg.target_knn) and 0 <= cfg.target_knn <= 1,
            "target_knn",
            "a kNN top-1 fraction in [0, 1] (e.g. 0.9 for 90%)",
            cfg.target_knn,
        )
        _check(
            cfg.monitor_knn > 0,
            "target_knn",
            "used with the kNN monitor on (monitor_knn > 0: the number of labelled images of its bank)",
            cfg.target_knn,
        )
    _check(
        cfg.label_fraction is None or (_finite(cfg.label_fraction) and 0 < cfg.label_fraction <= 1),
        "label_fraction",
        "a fraction in (0, 1] (or omitted: every label)",
        cfg.label_fraction,
    )
    _check(isinstance(cfg.method_kwargs, dict), "method_kwargs", "a dict", cfg.method_kwargs)
    check_method_kwargs(get_method(cfg.method), cfg.method, cfg.method_kwargs)
    return cfg


_FIXED_ARGS = ("self", "backbone", "info", "image_size")


def check_method_kwargs(cls, name: str, kwargs: dict) -> None:
    """Each keyword must be a parameter of the method's constructor, of the type of its default, and finite:
    ``--set temperature=Infinity`` would make every logit zero and the loss constant, ``temperature=nan`` a
    NaN at the first step."""
    params = {
        p.name: p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in _FIXED_ARGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    for key, value in kwargs.items():
        label = f"--set {key}"
        if key not in params:
            if takes_any:
                continue
            raise ConfigError(f"{label}: {name} has no option {key!r}; its options are {', '.join(params) or 'none'}")
        _check_value(label, value, params[key].default)


def _check_value(label: str, value, default) -> None:
    def bad(wants):
        return ConfigError(f"{label} must be {wants}, got {value!r}")

    if isinstance(value, float) and not math.isfinite(value):
        raise bad("a finite number")
    if isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, float) and not math.isfinite(v):
                raise bad("a list of finite numbers")
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
        raise bad("a finite number")
    if default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        if not isinstance(value, (bool, str)):  # a switch, or a named mode (e.g. DINO's centering="sinkhorn")
            raise bad("true or false")
    elif _is_number(default):
        if not _is_number(value):
            raise bad("a number")
        if _is_int(default) and not _is_int(value):
            raise bad("an integer")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise bad(f"a list like {list(default)}")

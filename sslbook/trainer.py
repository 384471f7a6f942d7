"""One training loop for every method.

The trainer knows nothing about any method: it builds the data, the backbone and the method named in
the config, then drives the method through its three hooks (see :mod:`sslbook.methods.base`). It does
the rest once for all: device and bf16 autocast, DistributedDataParallel under ``torchrun``, the
cosine learning-rate schedule with warm-up, a progress bar, a stop with a clear message on a NaN/Inf
loss, atomic checkpoints every epoch, exact resumption, and evaluation of the backbone at the end.

Under ``torchrun --nproc_per_node=K`` (see :mod:`sslbook.distributed`):

- ``batch_size`` is the **global** batch B: each process draws B/K images a step (B must be a multiple
  of K), and the learning rate follows the linear scaling rule with the global batch,
  lr = base_lr × B / 256, whatever K is.
- every process's ``DistributedSampler`` shares one seed and is reseeded each epoch (``set_epoch``):
  the K processes see disjoint shares of one new permutation of the data every epoch.
- DDP averages the gradients over the processes, so a step on K shares of B/K equals one step on the
  whole batch when nothing else depends on how the batch is split: losses that need the whole batch
  gather it (SimCLR's negatives with their gradients, see :mod:`sslbook.losses`), momentum encoders and
  queues are updated identically everywhere, and BatchNorm is the one thing that differs: per process
  unless the recipe sets ``sync_bn`` (one process reproduces per-process BN with
  :func:`sslbook.distributed.split_batchnorm`). ``tests/test_distributed.py`` checks a two-process step
  of SimCLR, MoCo v2 and BYOL against one process on the concatenated batch.
- only rank 0 logs (progress bar, messages), evaluates and writes checkpoints.

The pieces are separate functions so that the speed benchmark (``python -m sslbook bench``) times the
very same work: :func:`setup` (data, method, DDP, optimiser, batches, schedule) and :func:`train_step`
(one optimiser step); :func:`run` adds epochs, checkpoints, resumption and evaluation around them.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset, default_collate
from tqdm import tqdm

from sslbook import checkpoint as ckpt_io
from sslbook import distributed as dist
from sslbook._version import __version__
from sslbook.augment import to_float
from sslbook.config import ConfigError, TrainConfig, plain, resolve, validate
from sslbook.data.base import DataError, DataInfo, TensorImageDataset
from sslbook.data.device import DeviceBatches
from sslbook.data.indexed import WithIndex
from sslbook.data.registry import load_dataset, pretrain_split
from sslbook.data.subsets import LabelledStream, hide_labels, labelled_subset
from sslbook.methods import get_method
from sslbook.models import build_backbone
from sslbook.optim import build_optimizer
from sslbook.schedules import cosine_schedule


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the message names the step."""


@dataclass
class TrainResult:
    method: torch.nn.Module  # the trained method; its representation is ``method.backbone``
    config: TrainConfig
    history: list[dict] = field(default_factory=list)  # one dict per logged step
    metrics: dict = field(default_factory=dict)
    checkpoint: Path | None = None
    train_seconds: float = 0.0  # wall-clock seconds of the training epochs (summed over resumes; no evaluation)
    steps: int = 0  # optimiser steps taken
    # the learning curve (``monitor_knn``): one dict per epoch boundary, epoch 0 = at initialisation:
    # {"epoch", "step", "images" (drawn so far), "train_seconds" (so far), "knn_top1" (on the monitor subsets),
    # "eval_seconds" (what that kNN check took, not counted in train_seconds)}
    monitor: list[dict] = field(default_factory=list)

    @property
    def target_reached(self) -> dict | None:
        """A speed run's result (``target_knn``): the first monitor entry at or above the target, whose
        ``train_seconds`` is the time to the target; None if the run has no target or never reached it."""
        target = self.config.target_knn
        if target is None:
            return None
        return next((m for m in self.monitor if m["knn_top1"] >= target), None)

    @property
    def images_seen(self) -> int:
        """Training images drawn (each possibly as several views): steps × the global batch size."""
        return self.steps * self.config.batch_size

    @property
    def backbone(self) -> torch.nn.Module:
        return self.method.backbone


def build_method(cfg: TrainConfig, info: DataInfo) -> torch.nn.Module:
    """The method named by ``cfg`` around a fresh backbone (seeded, so every process starts equal)."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.backbone, info)
    return get_method(cfg.method)(backbone, info, cfg.image_size, **cfg.method_kwargs)


class _ViewCollate:
    """Makes the views inside DataLoader workers (``augment_on="loader"``): same code, CPU side."""

    def __init__(self, method):
        self.method = method

    def __call__(self, batch):
        images, labels, *index = default_collate(batch)
        index_kw = {"indices": index[0]} if index else {}
        return self.method.make_views(to_float(images), labels, **index_kw), labels


def _to_device(views, device):
    if isinstance(views, torch.Tensor):
        return views.to(device, non_blocking=True)
    if isinstance(views, (list, tuple)):
        return type(views)(_to_device(v, device) for v in views)
    if isinstance(views, dict):
        return {k: _to_device(v, device) for k, v in views.items()}
    return views


def eval_sets(cfg: TrainConfig):
    """The labelled train and test splits used by the evaluation protocols."""
    kwargs = dict(image_size=cfg.image_size, **cfg.data_kwargs)
    return load_dataset(cfg.data, "train", **kwargs), load_dataset(cfg.data, "test", **kwargs)


def evaluate_backbone(
    backbone, cfg: TrainConfig, protocols=None, train_set=None, test_set=None, progress=False
) -> dict:
    """Run the config's evaluation protocols on ``backbone``; fractions in [0, 1]."""
    from sslbook.evaluation import evaluate

    if train_set is None or test_set is None:
        train_set, test_set = eval_sets(cfg)
    return evaluate(
        backbone,
        train_set,
        test_set,
        protocols=tuple(protocols or cfg.eval_protocols),
        k=cfg.knn_k,
        temperature=cfg.knn_temperature,
        linear_epochs=cfg.linear_epochs,
        batch_size=cfg.eval_batch_size,
        progress=progress,
        bootstrap=cfg.eval_bootstrap,
    )


def classifier_metrics(method, test_set, batch_size: int = 512) -> dict:
    """``{"classifier_top1": ...}``: the test accuracy of the method's own classifier (:meth:`Method.classify`),
    for a method that has one; ``{}`` for one that does not."""
    from sslbook.evaluation.common import _iterate

    device = next(method.parameters()).device
    modes = {m: m.training for m in method.modules()}  # restored afterwards, module by module
    method.eval()
    correct = total = 0
    try:
        with torch.no_grad():
            for images, labels in _iterate(test_set, batch_size):
                scores = method.classify(to_float(images.to(device)))
                if scores is None:
                    return {}
                correct += int((scores.argmax(1).cpu() == labels).sum())
                total += len(labels)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return {"classifier_top1": correct / max(1, total)}


class _Monitor:
    """kNN top-1 of the backbone on fixed subsets (a class-balanced sample of ``n`` labelled training images as
    the bank, one of ``n // 2`` test images as queries; see :func:`balanced_sample`), cheap enough to run after
    every epoch. It draws no random numbers from the run's generators (its sample has its own seed, and the RNG
    state is restored), so the run it watches trains exactly as without it."""

    def __init__(self, cfg: TrainConfig):
        train_eval, test_eval = eval_sets(cfg)
        self.train_set = _sample(train_eval, cfg.monitor_knn)
        self.test_set = _sample(test_eval, max(1, cfg.monitor_knn // 2))
        self.cfg = cfg

    def __call__(self, backbone) -> float:
        from sslbook.evaluation import extract_features, knn_accuracy

        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            tr, ytr = extract_features(backbone, self.train_set, self.cfg.eval_batch_size)
            te, yte = extract_features(backbone, self.test_set, self.cfg.eval_batch_size)
        keep = ytr >= 0
        return float(knn_accuracy(tr[keep], ytr[keep], te, yte, self.cfg.knn_k, self.cfg.knn_temperature))


MONITOR_SEED = 0  # the monitor's sample is the same for every run on a data set, whatever the run's seed


def balanced_sample(labels: torch.Tensor, n: int, seed: int = MONITOR_SEED) -> torch.Tensor:
    """Indices of ``n`` labelled items (label >= 0), as equally many of each class as the classes allow,
    drawn with a fixed seed and returned in sorted order. Image folders (ImageNet, ``folder:``) list their
    images class by class, so the first ``n`` would hold a few classes only; this sample holds all of them."""
    labels = torch.as_tensor(labels).long()
    labelled = (labels >= 0).nonzero().flatten()
    if n >= len(labelled):
        return labelled
    g = torch.Generator().manual_seed(seed)
    order = labelled[torch.randperm(len(labelled), generator=g)]  # one seeded shuffle; then per class in that order
    classes = labels[order]
    rank = torch.zeros_like(order)  # each item's position among the shuffled items of its class
    for c in classes.unique():
        where = (classes == c).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    # take the items class by class in rounds (every class's 1st, then every class's 2nd, ...): balanced
    chosen = order[torch.argsort(rank * (int(classes.max()) + 1) + classes, stable=True)[:n]]
    return chosen.sort().values


def _sample(dataset, n: int):
    from sslbook.evaluation.common import _dataset_labels

    index = balanced_sample(_dataset_labels(dataset), n)
    if hasattr(dataset, "subset"):
        return dataset.subset(index)
    return Subset(dataset, index.tolist())


def train(method: str, preset: str | None = None, callbacks=(), **overrides) -> TrainResult:
    """Train ``method`` at ``preset`` (default: the book's current preset) with config overrides.

    >>> result = train("supervised", epochs=2, out="runs/sup")
    >>> result.metrics["knn_top1"]
    """
    return run(resolve(method, preset, **overrides), callbacks=callbacks)


DATA_ON = ("auto", "device", "loader")
# data_on="auto" copies the images to the GPU when they take at most this fraction of its free memory
# (the rest is for the model, the optimiser state and the activations of the views).
DEVICE_DATA_FRACTION = 0.25


def _in_memory(train_set):
    """The in-memory data set behind ``train_set`` (through ``WithIndex``), or None."""
    base = train_set.dataset if isinstance(train_set, WithIndex) else train_set
    return base if isinstance(base, TensorImageDataset) else None


def choose_data_path(cfg: TrainConfig, train_set, device: torch.device) -> str:
    """``"device"`` (:class:`~sslbook.data.device.DeviceBatches`) or ``"loader"`` (a DataLoader), per ``cfg.data_on``."""
    if cfg.data_on not in DATA_ON:
        raise ValueError(f"data_on must be one of {', '.join(DATA_ON)}, got {cfg.data_on!r}")
    base = _in_memory(train_set)
    if cfg.data_on == "loader":
        return "loader"
    if cfg.data_on == "device":
        if base is None:
            raise ValueError(
                f"data_on='device' needs a data set held in memory (shapes, CIFAR, STL-10); {cfg.data!r} is read "
                f"from image files ({type(train_set).__name__}): use data_on='loader' or 'auto'"
            )
        if cfg.augment_on != "device":
            raise ValueError(
                "data_on='device' makes the views on the device: it needs augment_on='device', not "
                f"{cfg.augment_on!r} (views made in DataLoader workers need data_on='loader')"
            )
        return "device"
    if device.type != "cuda" or base is None or cfg.augment_on != "device":
        return "loader"
    nbytes = base.images.numel() * base.images.element_size() + base.labels.numel() * base.labels.element_size()
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if nbytes <= DEVICE_DATA_FRACTION * free else "loader"


def build_batches(
    cfg: TrainConfig,
    train_set,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    method=None,
    path: str | None = None,
):
    """This process's batches: ``(images, labels[, indices])`` per step, reshuffled by :func:`set_epoch`.

    Both paths give the same batches in the same order: DistributedSampler(shuffle, seed=cfg.seed,
    drop_last) then batches of ``cfg.batch_size // world`` with the last incomplete one dropped.
    ``method`` is needed only for ``augment_on="loader"`` (its ``make_views`` runs in the workers).
    """
    per_process = cfg.batch_size // world
    path = path or choose_data_path(cfg, train_set, device)
    if path == "device":
        base = _in_memory(train_set)
        return DeviceBatches(
            base.images.to(device),
            base.labels.to(device),
            per_process,
            rank=rank,
            world=world,
            seed=cfg.seed,
            with_indices=isinstance(train_set, WithIndex),
        )
    if cfg.augment_on == "loader" and method is None:
        raise ValueError("augment_on='loader' makes the views in DataLoader workers: build_batches needs the method")
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    workers = cfg.num_workers
    return DataLoader(
        train_set,
        batch_size=per_process,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # workers live across epochs (no start-up cost per epoch), each keeping two batches ready
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        collate_fn=_ViewCollate(method) if cfg.augment_on == "loader" else None,
    )


def set_epoch(batches, epoch: int) -> None:
    """Reshuffle ``batches`` (from :func:`build_batches`) for ``epoch``."""
    (batches if isinstance(batches, DeviceBatches) else batches.sampler).set_epoch(epoch)


# The torch.compile backend of ``compile=True``; tests switch it to "aot_eager" (no code generation).
COMPILE_BACKEND = "inductor"


def compile_method(method: torch.nn.Module, backend: str | None = None) -> torch.nn.Module:
    """Compile, in place, each sub-network of ``method`` that has parameters (its backbone, heads and momentum
    copies): ``nn.Module.compile`` keeps the module and its ``state_dict`` keys, so checkpoints, DDP, EMA
    updates and the method's own Python (losses, queues, dicts of outputs) are untouched and run eagerly."""
    for child in method.children():
        if next(child.parameters(), None) is not None:
            child.compile(backend=backend or COMPILE_BACKEND)
    return method


@dataclass
class TrainSetup:
    """Everything one training step needs, built once by :func:`setup`."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    train_set: object
    info: DataInfo
    method: torch.nn.Module  # the method itself; ``model`` is it, or its DDP wrapper under torchrun
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: object  # a DataLoader or a DeviceBatches
    data_path: str  # "loader" or "device"
    steps_per_epoch: int
    total_steps: int
    lr: float  # the peak learning rate (after the linear scaling rule)
    lr_schedule: torch.Tensor
    needs_indices: bool
    use_amp: bool
    check_every: int  # the losses are checked for NaN/Inf every this many steps (one device sync)
    labelled: LabelledStream | None = None  # the labelled batch of each step (Method.labelled_batch_size), or None

    def set_epoch(self, epoch: int) -> None:
        set_epoch(self.batches, epoch)


def labelled_view(cfg: TrainConfig, train_set):
    """The training set as a method that trains on labels sees it, and the labelled subset's indices: with
    ``cfg.label_fraction``, the labels of the subset (:func:`sslbook.data.labelled_subset` of the fraction and the
    run's seed) and −1 for every other image; without, the set as it is and None. Refuses a set with no labelled
    image at all."""
    from sslbook.evaluation.common import _dataset_labels

    labels = _dataset_labels(train_set)
    if not bool((labels >= 0).any()):
        raise DataError(
            f"{cfg.method} trains on labels, and the training split of {cfg.data!r} has none (all images unlabelled)"
        )
    if cfg.label_fraction is None:
        return train_set, None
    keep = labelled_subset(labels, cfg.label_fraction, cfg.seed)
    return hide_labels(train_set, keep), keep


def labelled_stream(cfg: TrainConfig, method, train_set, keep, device, rank: int = 0, world: int = 1):
    """The labelled batch of every step (:class:`sslbook.data.LabelledStream` over ``keep``, the labelled subset
    :func:`labelled_view` chose) for a method that asks for one (``labelled_batch_size`` > 0) in a run with a
    labelled subset; None otherwise. Each process draws ``labelled_batch_size // world`` images a step from the
    subset, in an order of its own."""
    size = int(method.labelled_batch_size)
    if size <= 0 or keep is None:
        return None
    if cfg.augment_on == "loader":
        raise ValueError(
            f"{cfg.method} draws a labelled batch of its own each step (labelled_batch_size {size}), which is "
            "joined to the batch before its views are made: it needs augment_on='device', not 'loader'"
        )
    if method.needs_indices:
        raise ValueError(f"{cfg.method}: a labelled batch of its own cannot be combined with needs_indices")
    return LabelledStream(train_set, keep, max(1, size // world), seed=cfg.seed, rank=rank, device=device)


def setup(cfg: TrainConfig, train_set=None) -> TrainSetup:
    """Build the run's data set (or use ``train_set``), method, DDP wrapper, batches, schedule and optimiser."""
    device = dist.init()
    world, rank = dist.world_size(), dist.rank()
    if cfg.batch_size % world:
        raise ValueError(
            f"the global batch size {cfg.batch_size} (--batch-size) is not divisible by the {world} processes: "
            f"each process takes batch_size / {world} images a step; choose a multiple of {world}, e.g. "
            f"{max(world, cfg.batch_size // world * world)}"
        )
    if train_set is None:
        train_set = load_dataset(cfg.data, pretrain_split(cfg.data), image_size=cfg.image_size, **cfg.data_kwargs)
    info = train_set.info
    if info.num_classes < 2:
        raise DataError(
            f"the data set {cfg.data!r} has {info.num_classes} class{'es' if info.num_classes != 1 else ''} "
            f"({', '.join(map(str, info.classes)) or 'none'}): its evaluation (kNN, linear probe) needs at "
            "least 2, or every accuracy is 100% by construction"
        )
    method = build_method(cfg, info)
    labelled = None
    if method.uses_labels:  # the labels read and the subset drawn once, for the view and the stream
        view, keep = labelled_view(cfg, train_set)
        labelled = labelled_stream(cfg, method, train_set, keep, device, rank, world)
        train_set = view
    # Memory-bank methods keep one slot per training image: they ask for each image's index in the data set.
    needs_indices = bool(method.needs_indices)
    if needs_indices:
        train_set = WithIndex(train_set)
    method = place_method(method, cfg, device)
    model = dist.wrap_ddp(method, device, sync_bn=cfg.sync_bn)
    if cfg.compile:
        compile_method(method)

    if len(train_set) < cfg.batch_size:
        raise ValueError(f"the training set has {len(train_set)} images, fewer than one batch of {cfg.batch_size}")
    path = choose_data_path(cfg, train_set, device)
    batches = build_batches(cfg, train_set, device, rank, world, method=method, path=path)
    steps_per_epoch = len(batches)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    # The linear scaling rule: lr = base_lr × batch / 256 (Goyal et al. 2017), batch = the global batch
    # (all processes together), so a recipe's rate does not depend on how many processes share it.
    lr = cfg.base_lr * cfg.batch_size / 256
    lr_schedule = cosine_schedule(
        lr, lr * cfg.min_lr_ratio, total_steps, warmup_steps=round(cfg.warmup_epochs * steps_per_epoch)
    )
    optimizer = build_optimizer(cfg.optimizer, method, lr, cfg.weight_decay, cfg.momentum)
    return TrainSetup(
        cfg,
        device,
        rank,
        world,
        train_set,
        info,
        method,
        model,
        optimizer,
        batches,
        path,
        steps_per_epoch,
        total_steps,
        lr,
        lr_schedule,
        needs_indices,
        use_amp=cfg.amp and device.type == "cuda",
        check_every=1 if device.type == "cpu" else max(1, cfg.log_every),
        labelled=labelled,
    )


class StepLog:
    """The losses of the steps: kept on the device, checked for NaN/Inf every ``check_every`` steps and
    turned into logged floats (``history``) every ``log_every`` steps, one device sync each time."""

    def __init__(self, lr_schedule, check_every: int, log_every: int, ckpt_path=None, history: list | None = None):
        self.lr_schedule, self.check_every, self.log_every, self.ckpt_path = (
            lr_schedule,
            check_every,
            log_every,
            ckpt_path,
        )
        self.history = history if history is not None else []
        self.pending: list[tuple[int, torch.Tensor, dict]] = []
        self.saved_step: int | None = None  # the step of the last checkpoint written (None: none yet)

    def record(self, step: int, epoch: int, outputs: dict) -> None:
        """After the forward of ``step`` (0-based): keep its outputs; stop on a non-finite loss."""
        self.pending.append(
            (step, outputs["loss"].detach().float(), {k: v.detach().float() for k, v in outputs.items() if k != "loss"})
        )
        if (step + 1) % self.check_every == 0:
            _check_finite(self.pending, epoch, self)

    def step_done(self, steps: int, epoch: int, extra: dict) -> bool:
        """After ``steps`` optimiser steps: log them if it is time; True if it logged."""
        if steps % self.log_every:
            return False
        self.history.extend(_flush(self.pending, epoch, self.lr_schedule, extra, self))
        return True

    def flush(self, epoch: int, extra: dict | None = None) -> None:
        """Log the pending steps now (before a checkpoint inside an epoch), checking them for NaN/Inf."""
        if self.pending:
            self.history.extend(_flush(self.pending, epoch, self.lr_schedule, extra or {}, self))

    def end_epoch(self, epoch: int) -> None:
        self.flush(epoch)


def place_method(method: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """``method`` on ``device``, in channels_last memory format for convolutional backbones: cuDNN's fastest
    convolutions (with bf16) take NHWC, and so do oneDNN's on a CPU (the book's convnet: about 20% less time per
    step for InstDisc, PIRL, MoCo v3 and split-brain on a 2-core CPU; ViTs are unaffected)."""
    method = method.to(device)
    if cfg.backbone.startswith(("resnet", "convnet")):
        method = method.to(memory_format=torch.channels_last)
    return method


def batch_views(s: TrainSetup, method: torch.nn.Module, batch, step: int = 0) -> tuple:
    """``(views, labels)`` of one item of ``s.batches`` on the device: the views made in the loader workers
    (``augment_on="loader"``), or by ``method.make_views`` on the device, with the images' indices for
    methods that ask for them. With a labelled stream (``s.labelled``), step ``step``'s labelled images come
    first, then the batch's own."""
    images, labels, *index = batch
    labels = labels.to(s.device, non_blocking=True)
    if s.cfg.augment_on == "loader":
        return _to_device(images, s.device), labels
    images = images.to(s.device, non_blocking=True)
    if s.labelled is not None:
        extra_images, extra_labels = s.labelled.batch(step)
        images, labels = torch.cat([extra_images, images]), torch.cat([extra_labels, labels])
    index_kw = {"indices": index[0].to(s.device, non_blocking=True)} if s.needs_indices else {}
    return method.make_views(to_float(images), labels, **index_kw), labels


def train_step(s: TrainSetup, batch, step: int, epoch: int, log: StepLog) -> dict:
    """One optimiser step, as every run takes it: the scheduled learning rate, the views, the forward under
    bf16 autocast (CUDA), the loss bookkeeping, backward, gradient clipping, the optimiser step and the
    method's ``on_step_end``. ``batch`` is one item of ``s.batches``; returns what ``on_step_end`` logged."""
    device, cfg, method = s.device, s.cfg, s.method
    for group in s.optimizer.param_groups:  # groups may scale the rate or keep it fixed (see optim.param_groups)
        group["lr"] = (s.lr if group.get("fixed_lr") else float(s.lr_schedule[step])) * group.get("lr_scale", 1.0)
    views, labels = batch_views(s, method, batch, step)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.use_amp):
        outputs = s.model(views, labels)
    log.record(step, epoch, outputs)
    extra = optimizer_step(method, s.optimizer, outputs["loss"], step, s.total_steps, cfg.grad_clip)
    log.step_done(step + 1, epoch, extra)
    return extra


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT (Ctrl-C, a notebook's interrupt) or SIGTERM (a scheduler's preemption) after
    saving its checkpoint; the message says where it is and how to resume. ``signum`` is the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class _StopSignals:
    """SIGINT and SIGTERM ask the training loop to stop after the current step (it then saves and raises
    :class:`RunInterrupted`); outside the loop, or at a second signal, they interrupt at once."""

    def __init__(self):
        self.signum: int | None = None
        self.in_loop = False
        self.where = ""  # said when a signal interrupts outside the loop: where the last checkpoint is
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.in_loop and self.signum is None:
            self.signum = signum
            return
        raise RunInterrupted(f"{signal.Signals(signum).name}: stopped{self.where}", signum)


def _open_run_folder(cfg: TrainConfig, out: Path):
    """Rank 0: check ``out`` before anything is built: writable, not in use (its lock is taken and returned),
    no finished run replaced silently; stale temporary files of a killed write are removed."""
    ckpt_io.check_writable(out)
    lock = ckpt_io.RunLock(out)
    try:
        ckpt_io.remove_stale_temporaries(out)
        last = out / "last.pt"
        if last.is_file() and not cfg.resume and not cfg.overwrite:
            try:
                held = ckpt_io.load(last)
                what = (
                    f"a {held['config'].get('method')} run at epoch {held['epoch']}/{held['config'].get('epochs')}, "
                    f"step {held['step']}"
                )
            except ckpt_io.CheckpointError:
                what = "a checkpoint"
            raise ckpt_io.RunFolderError(
                f"--out {out} already holds {what} (last.pt): add --resume to continue it, --overwrite to replace it, "
                "or choose another --out folder"
            )
    except BaseException:
        lock.release()
        raise
    return lock


def run(cfg: TrainConfig, callbacks=()) -> TrainResult:
    """Train ``cfg`` (validated first), checkpointing to ``cfg.out``; see :func:`train`."""
    validate(cfg)
    out = Path(cfg.out) if cfg.out else None
    dist.init()
    lock, error = None, None
    if out is not None and dist.is_main():
        try:
            lock = _open_run_folder(cfg, out)
        except ckpt_io.RunFolderError as e:
            error = e
    if dist.broadcast_flag(error is not None):
        raise error or ckpt_io.RunFolderError(f"--out {out}: rank 0 cannot use the run folder (see its message)")
    try:
        with _StopSignals() as signals:
            signals.where = " before training began; nothing was saved"
            return _run(cfg, callbacks, out, signals)
    finally:
        if lock is not None:
            lock.release()


# Settings a resume may change: how long to train, how to feed and evaluate, where to log. Every other setting
# defines the run (its data, model, optimiser, schedule shape, seed): a resume that changes one is refused.
RESUME_MAY_CHANGE = (
    "epochs",
    "max_steps",
    "num_workers",
    "data_on",
    "compile",
    "progress",
    "out",
    "resume",
    "overwrite",
    "log_every",
    "checkpoint_every",
    "eval_protocols",
    "knn_k",
    "knn_temperature",
    "linear_epochs",
    "eval_batch_size",
    "eval_bootstrap",
    "monitor_every",
    "target_knn",
)


def _run(cfg: TrainConfig, callbacks, out: Path | None, signals: _StopSignals) -> TrainResult:
    s = setup(cfg)
    main, world, method, optimizer, info = dist.is_main(), s.world, s.method, s.optimizer, s.info
    steps_per_epoch, total_steps = s.steps_per_epoch, s.total_steps

    start_epoch, step, history, metrics = 0, 0, [], {}
    train_seconds = 0.0
    monitor_log: list[dict] = []
    changes: list[dict] = []
    done_epochs = 0
    torch.manual_seed(cfg.seed + 1 + s.rank)  # augmentation randomness differs between processes
    resume_rng = None
    if cfg.resume and out is not None and (out / "last.pt").is_file():
        state = ckpt_io.load(out / "last.pt")
        changed = _check_resumable(state["config"], cfg)
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, history = state["epoch"], state["step"], list(state["history"])
        train_seconds = float(state.get("train_seconds", 0.0))
        monitor_log = list(state.get("monitor", []))
        changes = list(state.get("changes", []))
        if changed:
            changes.append(dict(epoch=start_epoch, step=step, time=time.strftime("%Y-%m-%d %H:%M:%S"), changes=changed))
        if _same_evaluation(state["config"], cfg):
            metrics = dict(state.get("metrics") or {})  # reused below if the run is already finished
        done_epochs = start_epoch
        resume_rng = state["rng"][s.rank] if isinstance(state["rng"], list) else state["rng"]
        ckpt_io.set_rng_state(resume_rng)
        if main:
            print(
                f"resuming {cfg.method} from {out / 'last.pt'}: epoch {start_epoch}/{cfg.epochs}, step {step}"
                + (
                    f" (changed: {', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in changed.items())})"
                    if changed
                    else ""
                ),
                file=sys.stderr,
            )
    elif cfg.resume and main:
        print(f"--resume: no checkpoint in {out}, starting from scratch", file=sys.stderr)

    ckpt_path = out / "last.pt" if out is not None else None
    log = StepLog(s.lr_schedule, s.check_every, cfg.log_every, ckpt_path=ckpt_path, history=history)
    if ckpt_path is not None and ckpt_path.is_file() and cfg.resume:
        log.saved_step = step
    if ckpt_path is not None and ckpt_path.is_file() and cfg.resume:
        signals.where = f"; the checkpoint {ckpt_path} holds step {step} (continue with the same command and --resume)"
    epoch_t0 = None  # perf_counter at the start of the current epoch's timing, while training

    def save(epoch: int) -> None:
        if ckpt_path is None:
            return
        rng = ckpt_io.rng_state()
        if world > 1:  # each process's RNG state, so every process resumes its own stream
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        if not main:
            return
        method_state, optimizer_state = method.state_dict(), optimizer.state_dict()
        bad = _first_nonfinite(method_state) or _first_nonfinite(optimizer_state.get("state", {}), "optimizer.")
        if bad:
            where = (
                f"; the last finite checkpoint is {ckpt_path} (step {log.saved_step})"
                if log.saved_step is not None
                else "; no checkpoint was written"
            )
            raise NonFiniteLossError(
                f"{bad} is not finite after step {step}: not saving it{where}. "
                "Lower the learning rate, add --grad-clip, or check the input data."
            )
        seconds = train_seconds + (time.perf_counter() - epoch_t0 if epoch_t0 is not None else 0.0)
        state = dict(
            format=ckpt_io.FORMAT,
            version=__version__,
            config=cfg.to_dict(),
            info=info.to_dict(),
            method=method_state,
            optimizer=optimizer_state,
            epoch=epoch,
            step=step,
            rng=rng,
            history=history,
            metrics=metrics,
            train_seconds=seconds,
            monitor=monitor_log,
            changes=changes,
        )
        try:
            ckpt_io.save_atomic(state, ckpt_path)
        except OSError as e:
            kept = (
                f"the previous checkpoint (step {log.saved_step}) is intact"
                if log.saved_step is not None
                else "no checkpoint was written"
            )
            raise ckpt_io.CheckpointError(
                f"cannot write {ckpt_path}: {e.strerror or e} ({type(e).__name__}); {kept}. "
                "Free space or fix the folder, then run again with --resume"
            ) from e
        log.saved_step = step
        signals.where = f"; the checkpoint {ckpt_path} holds step {step} (continue with the same command and --resume)"

    monitor = (
        _Monitor(cfg) if cfg.monitor_knn > 0 and main and start_epoch < cfg.epochs and step < total_steps else None
    )

    def watch(epoch: int) -> None:
        # every monitor_every epochs, and after the last one
        if monitor is not None and (epoch % cfg.monitor_every == 0 or epoch >= cfg.epochs or step >= total_steps):
            t = time.perf_counter()
            knn = monitor(method.backbone)
            monitor_log.append(
                dict(
                    epoch=epoch,
                    step=step,
                    images=step * cfg.batch_size,
                    train_seconds=train_seconds,
                    knn_top1=knn,
                    eval_seconds=time.perf_counter() - t,
                )
            )

    def reached() -> bool:
        # a speed run stops once the monitor reads its target: rank 0 (which alone monitors) decides for all
        if cfg.target_knn is None:
            return False
        return dist.broadcast_flag(bool(monitor_log) and monitor_log[-1]["knn_top1"] >= cfg.target_knn)

    def stop_requested() -> bool:
        if world == 1:
            return signals.signum is not None
        return step % s.check_every == 0 and dist.any_flag(signals.signum is not None)

    if monitor is not None and step == 0 and not monitor_log:
        watch(0)  # the curve starts at the random initialisation
    stopped = reached()  # a resumed speed run that had reached its target trains no further
    # a checkpoint written inside an epoch (checkpoint_every, or a stop signal): continue that epoch where it stopped
    skip = max(0, step - start_epoch * steps_per_epoch) if start_epoch < cfg.epochs else 0
    for epoch in range(start_epoch, cfg.epochs):
        if step >= total_steps or stopped:
            break
        s.set_epoch(epoch)
        s.model.train()
        in_epoch = steps_per_epoch if epoch > start_epoch else steps_per_epoch - skip
        bar = tqdm(
            total=min(in_epoch, total_steps - step),
            desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}",
            disable=not (main and cfg.progress),
            file=sys.stderr,
            mininterval=1.0,
            leave=True,
        )
        batches = iter(s.batches)  # starting the iteration draws its seed from the global RNG, as before the stop
        if epoch == start_epoch and skip > 0:
            for _ in range(skip):  # the same shuffled order: pass the batches already trained on
                next(batches)
            ckpt_io.set_rng_state(resume_rng)  # the random state at the stop, after those draws
        epoch_t0, seen = time.perf_counter(), 0
        signals.in_loop = True
        for batch in batches:
            if step >= total_steps:
                break
            extra = train_step(s, batch, step, epoch, log)
            step += 1
            seen += cfg.batch_size
            if step % cfg.log_every == 0:
                bar.set_postfix(
                    loss=f"{history[-1]['loss']:.4f}", img_s=f"{seen / (time.perf_counter() - epoch_t0):.0f}"
                )
            bar.update(1)
            interrupted = stop_requested()
            if interrupted or (
                cfg.checkpoint_every
                and step % cfg.checkpoint_every == 0
                and step % steps_per_epoch
                and step < total_steps
            ):
                log.flush(epoch, extra)
                save(epoch)
            if interrupted:
                signals.in_loop = False
                bar.close()
                signum = signals.signum or signal.SIGTERM
                where = (
                    f"the checkpoint {ckpt_path} holds step {step}; continue with the same command and --resume"
                    if ckpt_path is not None
                    else "no --out folder was given, so nothing was saved"
                )
                raise RunInterrupted(
                    f"{signal.Signals(signum).name}: stopped {cfg.method} at step {step} "
                    f"(epoch {epoch + 1}/{cfg.epochs}); {where}",
                    signum,
                )
        signals.in_loop = False
        log.end_epoch(epoch)
        bar.close()
        train_seconds += time.perf_counter() - epoch_t0
        epoch_t0 = None
        done_epochs = epoch + 1
        watch(done_epochs)
        save(done_epochs)
        for cb in callbacks:
            cb(epoch + 1, method, history)
        stopped = reached()
        if stopped and main:
            m = monitor_log[-1]
            print(
                f"{cfg.method}: kNN top-1 {m['knn_top1']:.4f} >= target {cfg.target_knn} after epoch {done_epochs}, "
                f"{m['train_seconds']:.1f} s of training: stopping",
                file=sys.stderr,
            )

    # A finished run whose checkpoint holds metrics of the same evaluation settings is not evaluated again
    # (the same decision on every process, since each loaded the same checkpoint).
    finished_before = (skip == 0 and start_epoch >= min(cfg.epochs, math.ceil(total_steps / steps_per_epoch))) or (
        stopped and done_epochs == start_epoch
    )
    reuse = bool(metrics) and finished_before
    if reuse and main:
        print(f"{cfg.method}: the checkpoint is finished and evaluated; reusing its metrics", file=sys.stderr)
    elif main:
        train_eval, test_eval = eval_sets(cfg)
        if cfg.bn_refresh:  # the random-init control: BatchNorm statistics of the training images, nothing else
            from sslbook.evaluation import refresh_bn_statistics

            refresh_bn_statistics(method.backbone, train_eval, batch_size=cfg.eval_batch_size)
        metrics = evaluate_backbone(method.backbone, cfg, train_set=train_eval, test_set=test_eval)
        metrics.update(classifier_metrics(method, test_eval, cfg.eval_batch_size))
        metrics.update(method.evaluate_extra())
        metrics = {k: float(v) for k, v in metrics.items()}
    if not reuse:
        save(done_epochs)  # again, now with the metrics
    dist.barrier()
    return TrainResult(method, cfg, history, metrics, ckpt_path, train_seconds, step, monitor_log)


def _first_nonfinite(state, prefix: str = "") -> str | None:
    """The name of the first floating-point tensor in a (nested) state dict with a NaN or an Inf, or None."""
    if isinstance(state, torch.Tensor):
        return prefix.rstrip(".") if state.is_floating_point() and not torch.isfinite(state).all() else None
    if isinstance(state, dict):
        for k, v in state.items():
            bad = _first_nonfinite(v, f"{prefix}{k}.")
            if bad:
                return bad
    return None


def optimizer_step(method, optimizer, loss, step: int, total_steps: int, grad_clip: float | None = None) -> dict:
    """The second half of a training step, after ``outputs = model(views, labels)`` (``model``: the method,
    or its DDP wrapper under torchrun): backward (where DDP averages the gradients over the processes),
    optional gradient clipping, the optimiser step, then ``method.on_step_end`` (momentum encoders,
    queues, schedules). Returns what ``on_step_end`` logs."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)
    optimizer.step()
    return method.on_step_end(step, total_steps)


def _check_finite(pending, epoch, log: StepLog) -> None:
    losses = torch.stack([loss for _, loss, _ in pending])
    bad = ~torch.isfinite(losses)
    if bad.any():
        i = int(bad.nonzero()[0])
        step, value = pending[i][0] + 1, float(losses[i])  # 1-based, as the history's "step"
        where = (
            f"; the last good checkpoint is {log.ckpt_path} (step {log.saved_step}, every tensor finite)"
            if log.ckpt_path is not None and log.saved_step is not None
            else ""
        )
        raise NonFiniteLossError(
            f"loss is {value} at step {step} (epoch {epoch + 1}); stopping the run{where}. "
            "Lower the learning rate, add --grad-clip, or check the input data."
        )


def _flush(pending, epoch, lr_schedule, extra, log: StepLog) -> list[dict]:
    """Turn the pending per-step tensors into logged floats (one device sync per log interval)."""
    _check_finite(pending, epoch, log)
    rows = []
    for step, loss, others in pending:
        row = {"step": step + 1, "epoch": epoch + 1, "loss": float(loss), "lr": float(lr_schedule[step])}
        row.update({k: float(v) for k, v in others.items()})
        rows.append(row)
    rows[-1].update({k: float(v) for k, v in extra.items()})
    pending.clear()
    return rows


_EVAL_KEYS = (
    "data",
    "eval_protocols",
    "knn_k",
    "knn_temperature",
    "linear_epochs",
    "image_size",
    "data_kwargs",
)


def _same_evaluation(saved: dict, cfg: TrainConfig) -> bool:
    """Whether metrics stored in a checkpoint were computed with the evaluation settings of ``cfg`` (a key an
    older checkpoint lacks counts at its default, which is what that checkpoint was evaluated with)."""
    defaults = TrainConfig().to_dict()
    now = cfg.to_dict()
    same = all(plain(saved.get(k, defaults[k])) == plain(now.get(k)) for k in _EVAL_KEYS)
    # the bootstrap only adds error bars to the same scores: metrics stored with at least as many resamples serve a
    # run that asks for fewer (or none), so a chapter and `compare` reading the same run do not evaluate it in turns
    return same and int(saved.get("eval_bootstrap", defaults["eval_bootstrap"])) >= int(now.get("eval_bootstrap") or 0)


def _check_resumable(saved: dict, cfg: TrainConfig) -> dict:
    """Refuse a resume that changes a setting defining the run; return what it changes of the others
    (``{key: [old, new]}``), which the checkpoint keeps in its ``changes`` history."""
    before = TrainConfig.from_dict(
        saved
    ).to_dict()  # a checkpoint of an older sslbook: its missing keys at their defaults
    now = cfg.to_dict()
    differs = {k: [before[k], now[k]] for k in now if plain(before.get(k)) != plain(now[k])}
    refused = [k for k in differs if k not in RESUME_MAY_CHANGE]
    if refused:
        k = refused[0]
        others = f" (and {', '.join(refused[1:])})" if len(refused) > 1 else ""
        raise ConfigError(
            f"--resume: the run in {cfg.out} was trained with {k}={before[k]!r}, this run asks for {k}={now[k]!r}{others}; "
            "a resume may change only how long it trains and how it is evaluated. Use the run's settings, another "
            "--out folder, or --overwrite to start afresh"
        )
    return {k: v for k, v in differs.items() if k not in ("resume", "overwrite", "progress")}


def load_trained(path, device="cpu") -> TrainResult:
    """Rebuild a trained method from a checkpoint (``weights_only=True``, so loading runs no code)."""
    state = ckpt_io.load(path)
    cfg = TrainConfig.from_dict(state["config"])
    info = DataInfo.from_dict(state["info"])
    method = build_method(cfg, info)
    method.load_state_dict(state["method"])
    return TrainResult(
        method.to(device).eval(),
        cfg,
        list(state["history"]),
        dict(state["metrics"]),
        Path(path),
        float(state.get("train_seconds", 0.0)),
        int(state["step"]),
        list(state.get("monitor", [])),
    )

"""One training step of SimCLR, MoCo v2 and BYOL on a fixed batch, taken the way the trainer takes it.

tests/dist_equivalence_worker.py runs each case on 2 gloo processes (each on its half of the batch,
DDP-wrapped, BatchNorm converted as the trainer converts it); tests/test_distributed.py runs the same
case in one process on the whole batch and compares the two. Both import this module, so the batch,
the models and the step are the same code.
"""

from __future__ import annotations

import torch

from sslbook.config import resolve
from sslbook.data.base import DataInfo
from sslbook.optim import build_optimizer
from sslbook.trainer import build_method, optimizer_step

WORLD = 2  # processes of the distributed run
BATCH = 8  # the global batch: 4 images per process
IMAGE_SIZE = 16
INFO = DataInfo("noise", ["a", "b"], IMAGE_SIZE)
STEP, TOTAL_STEPS = 0, 10
# lr = base_lr × 8 / 256 = 0.1: a step large enough that a wrong gradient moves the weights far beyond the tolerance
BASE_LR = 3.2

_SMALL = {
    "simclr": dict(proj_dim=16, temperature=0.5),
    "byol": dict(proj_dim=16, hidden_dim=32, base_momentum=0.9),
    # bn_splits = WORLD: ignored on 2 processes (each process is one split), the shuffled BN of one process
    "moco_v2": dict(queue_size=32, dim=16, mlp_hidden=32, momentum=0.9, temperature=0.2, bn_splits=WORLD),
}

# case: (method, sync_bn, what the two-process step is compared with)
#   "equal": the one-process step on the whole batch must give the same state
#   "differs": a control, it must NOT (the comparison can fail)
CASES = {
    "simclr": ("simclr", True, "equal"),  # the recipe's global BN
    "byol": ("byol", True, "equal"),  # the recipe's global BN, the target network converted with the rest
    "moco_v2": ("moco_v2", False, "equal"),  # per-process BN for queries, shuffled BN for keys (the recipe)
    "moco_v2_sync_bn": ("moco_v2", True, "equal"),  # global BN for queries; keys still shuffled per process
    "simclr_local_bn": ("simclr", False, "differs"),  # per-process BN against whole-batch BN
    "simclr_negatives_without_grad": ("simclr", True, "differs"),  # gathered negatives cut from the graph
}


def config(case: str):
    name, sync_bn, _ = CASES[case]
    return resolve(
        name,
        "tiny",
        backbone="convnet_small",
        image_size=IMAGE_SIZE,
        batch_size=BATCH,
        optimizer="sgd",
        base_lr=BASE_LR,
        weight_decay=1e-4,
        momentum=0.9,
        warmup_epochs=0,
        sync_bn=sync_bn,
        method_kwargs=_SMALL[name],
    )


def build(case: str):
    """The method exactly as the trainer builds it (seeded: the same weights on every process), in float64.

    In float32 the two computations (two halves with global statistics, one whole batch) round differently by
    ~1e-7, and a ReLU whose input is that close to 0 opens in one and stays shut in the other: its whole gradient
    then differs, 1e-3 to 1e-2 of the weights' step, depending on which kernels the CPU and the memory layout pick
    (measured: BYOL's step on one machine). In float64 no pre-activation of this batch lies within rounding of 0."""
    cfg = config(case)
    return cfg, build_method(cfg, INFO).double()


def batch(method):
    """The global batch's views, identical on every process: fixed images, views drawn from a fixed seed."""
    g = torch.Generator().manual_seed(1234)
    images = torch.rand(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    labels = torch.randint(0, 2, (BATCH,), generator=g)
    torch.manual_seed(4321)
    return [v.double() for v in method.make_views(images, labels)], labels


def share(views, labels, rank: int, world: int = WORLD):
    """Process ``rank``'s rows of the global batch (the trainer's loader gives each process B/K images)."""
    b = BATCH // world
    rows = slice(rank * b, (rank + 1) * b)
    return [v[rows] for v in views], labels[rows]


def step(model, method, cfg, views, labels, shuffle_seed: int = 99) -> dict:
    """One training step as :func:`sslbook.trainer.run` takes it: the learning rate of step 0 (no warm-up:
    the peak, base_lr × global batch / 256), ``model(views, labels)`` (DDP under torchrun), then
    :func:`sslbook.trainer.optimizer_step` (backward, optimiser step, ``on_step_end``)."""
    lr = cfg.base_lr * cfg.batch_size / 256
    optimizer = build_optimizer(cfg.optimizer, method, lr, cfg.weight_decay, cfg.momentum)
    model.train()
    # MoCo's key shuffle draws its permutation here (on rank 0 when distributed): the same draw everywhere
    torch.manual_seed(shuffle_seed)
    outputs = model(views, labels)
    optimizer_step(method, optimizer, outputs["loss"], STEP, TOTAL_STEPS, cfg.grad_clip)
    return {k: float(v.detach()) for k, v in outputs.items()}


def state(method) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (key encoder, queue, target network, BN statistics), as float64 copies."""
    return {k: v.detach().clone().double() for k, v in method.state_dict().items()}


def is_bn_statistic(key: str) -> bool:
    return key.endswith(("running_mean", "running_var"))

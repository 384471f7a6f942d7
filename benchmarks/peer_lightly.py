"""sslbook's training step against the peer library lightly's public pipeline, side by side, in one run.

    python benchmarks/peer_lightly.py --method simclr byol moco_v2 --batch-size 512 --steps 50 --warmup 10

Both sides train the same network on the same uint8 images, with the same batch size, image size,
optimiser, learning rate and head sizes (sslbook's ``full`` recipe of the method), bf16 autocast on CUDA
in both. The network is sslbook's backbone (``resnet18_cifar`` by default) on both sides, so what differs
is the pipeline:

- **lightly**: the images as a uint8 N×H×W×3 array, each turned into a PIL image and augmented one at a
  time by lightly's multi-view transform (``SimCLRTransform``, ``BYOLTransform``, ``MoCoV2Transform``) in
  DataLoader worker processes (pinned memory, persistent workers); lightly's heads
  (``lightly.models.modules``), losses (``NTXentLoss``, with its memory bank for MoCo;
  ``NegativeCosineSimilarity``), ``update_momentum`` / ``deactivate_requires_grad`` / ``cosine_schedule``
  and LARS (``lightly.utils.lars``) where the recipe says LARS; a plain PyTorch loop.
- **sslbook**: ``python -m sslbook bench`` (:func:`sslbook.benchmarks.bench`): the trainer's own step,
  with the batches drawn on the device from images held there when they fit (``data_on="auto"``), views
  made on the whole batch on the device, channels_last for convolutional backbones, fused optimisers where PyTorch has them.

The data: CIFAR-10's training images if ``data/cifar-10-batches-py`` holds them (``--data auto``, the
default), else random uint8 images of CIFAR-10's shape; the script says which. It prints the hardware,
one row per method with both speeds and the ratio sslbook / lightly, and as its last line one JSON object.
lightly is an optional extra (``pip install -e ".[bench]"``), never a dependency of the sslbook package.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's sslbook, whatever is installed

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

METHODS = ("simclr", "byol", "moco_v2")


def load_images(data: str, n_random: int, image_size: int = 32):
    """(uint8 N×3×H×W tensor, labels, a sentence saying what the data is)."""
    from sslbook.benchmarks import random_dataset
    from sslbook.data import DATA_ROOT, DataError, load_dataset

    if data in ("auto", "cifar10"):
        try:
            ds = load_dataset("cifar10", "train")
            return (
                ds.images,
                ds.labels,
                f"CIFAR-10's {len(ds)} training images (from {DATA_ROOT / 'cifar-10-batches-py'})",
            )
        except DataError:
            if data == "cifar10":
                raise
    elif data != "random":
        raise ValueError(f"--data must be auto, cifar10 or random, got {data!r}")
    ds = random_dataset(n_random, image_size)
    text = f"{n_random} random uint8 images of CIFAR-10's shape (3×{image_size}×{image_size})"
    return (
        ds.images,
        ds.labels,
        text + (f" (no CIFAR-10 in {DATA_ROOT / 'cifar-10-batches-py'})" if data == "auto" else ""),
    )


def method_args(method: str, cfg) -> dict:
    """The method's arguments in sslbook's recipe: the class defaults updated with the recipe's ``method_kwargs``."""
    from sslbook.methods import get_method

    sig = inspect.signature(get_method(method).__init__)
    args = {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
    args.update(cfg.method_kwargs)
    return args


# ---------------------------------------------------------------------------------------------------------
# The peer's side: lightly's transforms, heads and losses in a plain PyTorch loop.


class ArrayViews(torch.utils.data.Dataset):
    """uint8 N×H×W×3 images → a PIL image → the multi-view transform, as torchvision's CIFAR10 data set does."""

    def __init__(self, array: np.ndarray, labels: np.ndarray, transform):
        self.array, self.labels, self.transform = array, labels, transform

    def __len__(self):
        return len(self.array)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.array[i])), int(self.labels[i])


def lightly_transform(method: str, a: dict, size: int):
    """lightly's transform for ``method`` with sslbook's recipe values (no normalisation: the backbone normalises)."""
    from lightly.transforms import (
        BYOLTransform,
        BYOLView1Transform,
        BYOLView2Transform,
        MoCoV2Transform,
        SimCLRTransform,
    )

    if method == "simclr":
        return SimCLRTransform(
            input_size=size,
            cj_prob=a["jitter_p"],
            cj_strength=a["jitter_strength"],
            min_scale=a["crop_scale"][0],
            random_gray_scale=a["gray_p"],
            gaussian_blur=a["blur_p"],
            hf_prob=a["flip_p"],
            normalize=None,
        )
    jb, jc, js, jh = a["jitter"]
    if method == "byol":
        views = [
            cls(
                input_size=size,
                cj_bright=jb,
                cj_contrast=jc,
                cj_sat=js,
                cj_hue=jh,
                min_scale=a["crop_scale"][0],
                random_gray_scale=a["gray_p"],
                gaussian_blur=a["blur_p"][i],
                solarization_prob=a["solarize_p"][i],
                normalize=None,
            )
            for i, cls in enumerate((BYOLView1Transform, BYOLView2Transform))
        ]
        return BYOLTransform(view_1_transform=views[0], view_2_transform=views[1])
    if method == "moco_v2":
        return MoCoV2Transform(
            input_size=size,
            cj_prob=a["jitter_p"],
            cj_bright=jb,
            cj_contrast=jc,
            cj_sat=js,
            cj_hue=jh,
            min_scale=a["crop_scale"][0],
            random_gray_scale=a["gray_p"],
            gaussian_blur=a["blur_p"],
            normalize=None,
        )
    raise ValueError(f"no peer pipeline for {method!r}; choose from {', '.join(METHODS)}")


class PeerModel(nn.Module):
    """The method written the way lightly's documentation writes it, around the given backbone."""

    def __init__(self, method: str, backbone: nn.Module, a: dict):
        from lightly.loss import NegativeCosineSimilarity, NTXentLoss
        from lightly.models.modules import (
            BYOLPredictionHead,
            BYOLProjectionHead,
            MoCoProjectionHead,
            SimCLRProjectionHead,
        )
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.method, self.backbone, d = method, backbone, backbone.out_dim
        if method == "simclr":
            self.projection_head = SimCLRProjectionHead(d, d, a["proj_dim"])
            self.criterion = NTXentLoss(temperature=a["temperature"])
        elif method == "byol":
            self.projection_head = BYOLProjectionHead(d, a["hidden_dim"], a["proj_dim"])
            self.prediction_head = BYOLPredictionHead(a["proj_dim"], a["hidden_dim"], a["proj_dim"])
            self.criterion = NegativeCosineSimilarity()
            self.base_momentum = a["base_momentum"]
        elif method == "moco_v2":
            self.projection_head = MoCoProjectionHead(d, a["mlp_hidden"], a["dim"])
            self.criterion = NTXentLoss(temperature=a["temperature"], memory_bank_size=(a["queue_size"], a["dim"]))
            self.base_momentum = a["momentum"]
        else:
            raise ValueError(f"no peer pipeline for {method!r}; choose from {', '.join(METHODS)}")
        if method in ("byol", "moco_v2"):
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)

    def before_step(self, step: int, total_steps: int) -> None:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        if self.method == "byol":
            m = cosine_schedule(step, total_steps, self.base_momentum, 1.0)
        elif self.method == "moco_v2":
            m = self.base_momentum
        else:
            return
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        if self.method == "simclr":
            return self.criterion(self.projection_head(self.backbone(x0)), self.projection_head(self.backbone(x1)))
        if self.method == "byol":
            p0 = self.prediction_head(self.projection_head(self.backbone(x0)))
            p1 = self.prediction_head(self.projection_head(self.backbone(x1)))
            with torch.no_grad():
                z0 = self.projection_head_momentum(self.backbone_momentum(x0))
                z1 = self.projection_head_momentum(self.backbone_momentum(x1))
            return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        query = self.projection_head(self.backbone(x0))
        with torch.no_grad():
            key = self.projection_head_momentum(self.backbone_momentum(x1))
        return self.criterion(query, key)


def peer_optimizer(cfg, model: PeerModel, lr: float):
    """The recipe's optimiser (LARS from lightly, SGD or AdamW from PyTorch), no weight decay on norms and biases."""
    from lightly.models.utils import get_weight_decay_parameters

    modules = [m for name, m in model.named_children() if not name.endswith("_momentum") and name != "criterion"]
    decay, no_decay = get_weight_decay_parameters(modules)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "lars":
        from lightly.utils.lars import LARS

        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"no peer optimiser for {cfg.optimizer!r}")


def bench_peer(
    method: str, cfg, images: torch.Tensor, labels: torch.Tensor, steps: int, warmup: int, workers: int
) -> dict:
    """Images per second of lightly's pipeline: DataLoader workers with lightly's transform, then the step."""
    from sslbook.data.base import DataInfo
    from sslbook.models import build_backbone

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    a = method_args(method, cfg)
    array = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())  # N×H×W×3, as CIFAR's arrays come
    dataset = ArrayViews(array, labels.numpy(), lightly_transform(method, a, cfg.image_size))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
    )
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} images are fewer than one batch of {cfg.batch_size}")
    torch.manual_seed(cfg.seed)
    info = DataInfo("peer", [str(i) for i in range(10)], cfg.image_size)
    model = PeerModel(method, build_backbone(cfg.backbone, info), a).to(device)
    lr = cfg.base_lr * cfg.batch_size / 256
    optimizer = peer_optimizer(cfg, model, lr)
    total = warmup + steps

    def batches():
        while True:
            yield from loader

    stream = batches()

    def step(i: int) -> torch.Tensor:
        (x0, x1), _ = next(stream)
        x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
        model.before_step(i, total)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model.loss(x0, x1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    model.train()
    for i in range(warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(warmup, total):
        loss = step(i)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    import lightly

    return dict(
        library=f"lightly {lightly.__version__}",
        images_per_s=steps * cfg.batch_size / seconds,
        step_ms=1000 * seconds / steps,
        seconds=seconds,
        workers=workers,
        final_loss=float(loss),
    )


# ---------------------------------------------------------------------------------------------------------


def compare(
    methods=METHODS,
    batch_size: int = 512,
    steps: int = 50,
    warmup: int = 10,
    backbone: str = "resnet18_cifar",
    data: str = "auto",
    images: int = 50000,
    workers: int | None = None,
    compile: bool = False,
    data_on: str | None = None,
    verbose: bool = True,
) -> dict:
    """Run both pipelines for each method; return (and print) the figures."""
    import os

    from sslbook.benchmarks import bench, hardware
    from sslbook.config import resolve
    from sslbook.data.base import DataInfo, TensorImageDataset

    try:
        import lightly  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"the peer comparison needs lightly: pip install -e '.[bench]' ({e})")
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    x, y, about = load_images(data, images)
    train_set = TensorImageDataset(x, y, DataInfo("bench", [str(i) for i in range(10)], x.shape[-1]))
    label = "cifar10" if about.startswith("CIFAR") else "random"
    rows = []
    for method in methods:
        cfg = resolve(method, "full", batch_size=batch_size, backbone=backbone, num_workers=workers, data=label)
        ours = bench(
            method,
            "full",
            steps=steps,
            warmup=warmup,
            batch_size=batch_size,
            backbone=backbone,
            data=label,
            compile=compile,
            data_on=data_on,
            num_workers=workers,
            train_set=train_set,
            verbose=False,
        )
        peer = bench_peer(method, cfg, x, y, steps, warmup, workers)
        rows.append(
            dict(
                method=method,
                backbone=backbone,
                batch_size=batch_size,
                image_size=cfg.image_size,
                optimizer=cfg.optimizer,
                sslbook_images_per_s=ours["images_per_s"],
                peer_images_per_s=peer["images_per_s"],
                ratio=ours["images_per_s"] / peer["images_per_s"],
                sslbook_data_path=ours["data_path"],
                sslbook_seconds_per_epoch=ours["seconds_per_epoch"],
                peer_seconds_per_epoch=50000 / peer["images_per_s"],
                peer_workers=workers,
                sslbook=ours,
                peer=peer,
            )
        )
    result = dict(
        hardware=hardware(),
        peer=rows[0]["peer"]["library"] if rows else None,
        data=about,
        steps=steps,
        warmup=warmup,
        compile=compile,
        rows=rows,
    )
    if verbose:
        print(format_compare(result))
        print(json.dumps(result))
    return result


def format_compare(r: dict) -> str:
    lines = [
        f"sslbook vs {r['peer']}: images/s through the whole training step ({r['steps']} timed steps after "
        f"{r['warmup']} warm-up steps, bf16 autocast on CUDA, sslbook compile {'on' if r['compile'] else 'off'})",
        f"hardware: {r['hardware']}",
        f"data: {r['data']}",
        f"{'method':<9}{'backbone':<16}{'batch':>6}{'optim':>7}{'sslbook img/s':>15}{'lightly img/s':>15}"
        f"{'sslbook/lightly':>17}  sslbook data path / lightly workers",
    ]
    for row in r["rows"]:
        lines.append(
            f"{row['method']:<9}{row['backbone']:<16}{row['batch_size']:>6}{row['optimizer']:>7}"
            f"{row['sslbook_images_per_s']:>15,.1f}{row['peer_images_per_s']:>15,.1f}{row['ratio']:>16.2f}×"
            f"  {row['sslbook_data_path']} / {row['peer_workers']}"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python benchmarks/peer_lightly.py", description=__doc__.splitlines()[0])
    p.add_argument("--method", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--backbone", default="resnet18_cifar", help="sslbook's backbone, used by both sides")
    p.add_argument("--data", default="auto", choices=["auto", "cifar10", "random"])
    p.add_argument("--images", type=int, default=50000, help="how many random images when there is no CIFAR-10")
    p.add_argument(
        "--workers", type=int, help="DataLoader workers (lightly; sslbook's loader path); default min(8, CPUs)"
    )
    p.add_argument("--compile", action="store_true", help="sslbook side: torch.compile")
    p.add_argument("--data-on", choices=["auto", "device", "loader"], help="sslbook side: the data path (default auto)")
    a = p.parse_args(argv)
    return compare(
        a.method, a.batch_size, a.steps, a.warmup, a.backbone, a.data, a.images, a.workers, a.compile, a.data_on
    )


if __name__ == "__main__":
    main()

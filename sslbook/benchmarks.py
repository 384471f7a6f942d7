"""Speed benchmarks: figures printed with the hardware they were measured on (not timed tests).

    python -m sslbook bench METHOD [--preset P] [--steps N] [--batch-size B] [--backbone NAME] [--data NAME]
                                   [--warmup W] [--compile] [--data-on auto|device|loader]
    python -m sslbook.benchmarks hardware
    python -m sslbook.benchmarks mae-encoder [--backbone vit_tiny] [--batch 256] [--steps 5]

``bench`` (:func:`bench`): images per second through the whole training step exactly as the trainer takes
it (:func:`sslbook.trainer.setup` and :func:`sslbook.trainer.train_step`: the batch from the chosen data
path, the views, the forward under bf16 autocast on CUDA, backward, the optimiser step, ``on_step_end``),
timed after warm-up steps between CUDA synchronisations; the peak GPU memory; the model FLOPs of one step
(forward + backward of the method on one batch of views, counted once with ``FlopCounterMode``), the
achieved FLOP/s and the model FLOPs utilisation (MFU) against the device's peak dense bf16 FLOP/s
(:data:`PEAK_BF16_FLOPS`); and the seconds a 50,000-image epoch takes at that speed.

``mae-encoder``: MAE's encoder runs on the visible patches only, so its cost should scale with
(1 − mask ratio). The benchmark times a forward + backward pass of the ViT encoder at several mask
ratios, at the same batch, with bf16 autocast and the fused attention kernel on CUDA.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time

import torch

from sslbook.data.noise import random_dataset  # noqa: F401 (bench's --data random; re-exported)


def hardware() -> str:
    """One line naming the device the figures were measured on."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} threads of {os.cpu_count()} cores, torch {torch.__version__}"


# Peak dense (no structured sparsity) bf16 tensor-core FLOP/s per GPU, from NVIDIA's data sheets; matched
# against torch.cuda.get_device_name() in this order. H100 SXM (named "H100 80GB HBM3" or "H100 SXM") and
# H200: 989.4 TFLOP/s (1979 with sparsity); H100 PCIe: 756; A100 (SXM and PCIe): 312; L40S: 362; L4: 121;
# A10: 125. Other devices (and the CPU): no peak, so no MFU.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    (r"\bH200\b", 989e12),
    (r"\bH100\b.*(\bSXM|80GB HBM3)", 989e12),
    (r"\bH100 PCIe\b", 756e12),
    (r"\bA100\b", 312e12),
    (r"\bL40S\b", 362e12),
    (r"\bL4\b", 121e12),
    (r"\bA10\b", 125e12),
]

EPOCH_IMAGES = 50_000  # "seconds per epoch" is for an epoch of CIFAR-10's size


def peak_bf16_flops(device_name: str | None) -> float | None:
    """The device's peak dense bf16 FLOP/s from :data:`PEAK_BF16_FLOPS`, or None if it is not listed."""
    for pattern, peak in PEAK_BF16_FLOPS:
        if device_name and re.search(pattern, device_name):
            return peak
    return None


def step_flops(s, batch) -> int:
    """Model FLOPs of one training step: forward + backward of the method on one batch of views, counted
    with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions) on a fresh copy of
    the method, so the run's own method, its state and its compiled modules are left alone."""
    from torch.utils.flop_counter import FlopCounterMode

    from sslbook.trainer import batch_views, build_method, place_method

    devices = [s.device.index or 0] if s.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        probe = place_method(build_method(s.cfg, s.info), s.cfg, s.device)
        probe.train()
        views, labels = batch_views(s, probe, batch)
        counter = FlopCounterMode(display=False)
        with counter:
            with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.use_amp):
                out = probe(views, labels)
            out["loss"].backward()
    del probe, views, out
    return int(counter.get_total_flops())


def _batch_stream(s):
    """The run's batches epoch after epoch, as the trainer draws them: (epoch, batch)."""
    epoch = 0
    while True:
        s.set_epoch(epoch)
        n = 0
        for batch in s.batches:
            n += 1
            yield epoch, batch
        if n == 0:
            raise ValueError("the data gives no batch: the training set is smaller than one batch per process")
        epoch += 1


def bench(
    method: str,
    preset: str | None = None,
    steps: int = 50,
    warmup: int = 10,
    batch_size: int | None = None,
    backbone: str | None = None,
    data: str | None = None,
    compile: bool = False,
    data_on: str | None = None,
    images: int = EPOCH_IMAGES,
    num_workers: int | None = None,
    train_set=None,
    verbose: bool = True,
    **overrides,
) -> dict:
    """Images per second of ``method``'s training step, as :func:`sslbook.trainer.run` takes it.

    ``data="random"``: ``images`` random uint8 images of the config's size (CIFAR's shape by default);
    ``train_set``: any sslbook data set instead of loading one. ``overrides`` go to
    :func:`sslbook.config.resolve`. Returns a dict of the figures (None where a figure does not apply:
    GPU memory on the CPU, MFU on a device without a listed peak); prints a table when ``verbose``.
    """
    from sslbook import distributed as dist
    from sslbook.config import resolve
    from sslbook.trainer import StepLog, setup, train_step

    if not (isinstance(steps, int) and steps >= 1 and isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"bench needs steps >= 1 and warmup >= 0, got steps={steps!r}, warmup={warmup!r}")
    cfg = resolve(
        method,
        preset,
        batch_size=batch_size,
        backbone=backbone,
        data=data,
        compile=compile or None,
        data_on=data_on,
        num_workers=num_workers,
        max_steps=warmup + steps,
        progress=False,
        **overrides,
    )
    if train_set is None and cfg.data == "random":
        train_set = random_dataset(images, cfg.image_size)
    s = setup(cfg, train_set)
    cuda = s.device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(s.device)

    stream = _batch_stream(s)
    first_epoch, first = next(stream)
    flops = step_flops(s, first) * s.world
    if cuda:
        torch.cuda.empty_cache()
    torch.manual_seed(cfg.seed + 1 + s.rank)
    log = StepLog(s.lr_schedule, s.check_every, cfg.log_every)
    s.model.train()
    step, epoch, batch = 0, first_epoch, first
    for _ in range(warmup):
        train_step(s, batch, step, epoch, log)
        step += 1
        epoch, batch = next(stream)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(s.device)
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(s, batch, step, epoch, log)
        step += 1
        if i + 1 < steps:  # fetching the next batch is part of the step
            epoch, batch = next(stream)
    sync()
    seconds = time.perf_counter() - t0
    log.end_epoch(epoch)  # the last losses, checked for NaN/Inf (after the clock stopped)

    images_per_s = steps * cfg.batch_size / seconds
    achieved = flops * steps / seconds
    name = torch.cuda.get_device_name(s.device) if cuda else None
    peak = peak_bf16_flops(name) if cuda else None
    result = dict(
        method=method,
        preset=cfg.preset,
        backbone=cfg.backbone,
        data=cfg.data,
        images=len(s.train_set),
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        processes=s.world,
        steps=steps,
        warmup=warmup,
        data_path=s.data_path,
        augment_on=cfg.augment_on,
        num_workers=cfg.num_workers if s.data_path == "loader" else 0,
        compile=bool(cfg.compile),
        amp=s.use_amp,
        optimizer=cfg.optimizer,
        hardware=hardware(),
        device=name or "cpu",
        seconds=seconds,
        step_ms=1000 * seconds / steps,
        images_per_s=images_per_s,
        seconds_per_epoch=EPOCH_IMAGES / images_per_s,
        epoch_images=EPOCH_IMAGES,
        flops_per_step=flops,
        achieved_tflops=achieved / 1e12,
        peak_bf16_tflops=peak / 1e12 if peak else None,
        mfu=achieved / (peak * s.world) if peak else None,
        peak_memory_gib=torch.cuda.max_memory_allocated(s.device) / 2**30 if cuda else None,
        final_loss=log.history[-1]["loss"] if log.history else None,
    )
    if verbose and dist.is_main():
        print(format_bench(result))
    return result


def format_bench(r: dict) -> str:
    """The readable table of a :func:`bench` result."""

    def na(x, fmt):
        return "n/a" if x is None else format(x, fmt)

    lines = [
        f"sslbook bench: {r['method']} (preset {r['preset']}), {r['backbone']}, global batch {r['batch_size']} "
        f"of {r['image_size']}×{r['image_size']} px on {r['processes']} process(es), {r['optimizer']}",
        f"hardware: {r['hardware']}",
        f"data: {r['data']} ({r['images']} images) on the {r['data_path']} path"
        + (f" ({r['num_workers']} workers)" if r["data_path"] == "loader" else "")
        + f", views made on the {'device' if r['augment_on'] == 'device' else 'loader workers'}; "
        f"bf16 autocast {'on' if r['amp'] else 'off'}; compile {'on' if r['compile'] else 'off'}; "
        f"{r['steps']} timed steps after {r['warmup']} warm-up steps",
    ]
    rows = [
        ("images / s", f"{r['images_per_s']:,.1f}"),
        ("ms / step", f"{r['step_ms']:,.2f}"),
        (f"seconds per {r['epoch_images']:,}-image epoch", f"{r['seconds_per_epoch']:,.2f}"),
        ("model FLOPs / step (fwd + bwd)", f"{r['flops_per_step'] / 1e9:,.2f} GFLOP"),
        ("achieved TFLOP/s", f"{r['achieved_tflops']:,.3f}"),
        ("peak dense bf16 TFLOP/s", na(r["peak_bf16_tflops"], ",.0f")),
        ("MFU", "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"),
        ("peak GPU memory", "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f} GiB"),
    ]
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v:>14}" for k, v in rows]
    return "\n".join(lines)


def mae_encoder(
    backbone: str = "vit_tiny",
    batch_size: int = 256,
    image_size: int | None = None,
    ratios=(0.0, 0.5, 0.75, 0.9),
    steps: int = 5,
    warmup: int = 2,
    device=None,
    verbose: bool = True,
) -> dict:
    """Seconds per forward + backward of the MAE encoder on the kept patches, per mask ratio.

    Returns ``{"hardware", "batch_size", "tokens": {ratio: visible patches}, "seconds": {ratio: s},
    "cpu_seconds": {ratio: process CPU s} (on a shared CPU, wall time counts other processes' load too),
    "relative": {ratio: time / time at ratio 0}}``."""
    from sslbook.data.base import DataInfo
    from sslbook.methods.mae import random_masking
    from sslbook.models import build_backbone

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = DataInfo("bench", ["0"], image_size or 32, (0.5,) * 3, (0.25,) * 3)
    vit = build_backbone(backbone, info).to(device)
    size = image_size or vit.image_size
    L = (size // vit.patch_size) ** 2
    x = torch.rand(batch_size, 3, size, size, device=device)
    use_amp = device.type == "cuda"

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    seconds, cpu_seconds, tokens = {}, {}, {}
    for ratio in ratios:
        ids_keep, _, _ = random_masking(batch_size, L, ratio, device)
        tokens[ratio] = ids_keep.shape[1]

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = vit.forward_tokens(x, ids_keep=ids_keep)
            out.float().mean().backward()

        for _ in range(warmup):
            step()
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        sync()
        seconds[ratio] = (time.perf_counter() - t0) / steps
        cpu_seconds[ratio] = (time.process_time() - c0) / steps
        vit.zero_grad(set_to_none=True)
    result = dict(
        hardware=hardware(),
        backbone=backbone,
        batch_size=batch_size,
        image_size=size,
        patches=L,
        tokens=tokens,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        relative={r: seconds[r] / seconds[ratios[0]] for r in ratios},
    )
    if verbose:
        print(
            f"MAE encoder, {backbone} at {size} px ({L} patches), batch {batch_size}, forward + backward; {result['hardware']}"
        )
        for r in ratios:
            print(
                f"  mask {r:4.0%}: {tokens[r]:4d} visible patches  {1000 * seconds[r]:9.1f} ms/step  "
                f"{result['relative'][r]:5.2f} × the unmasked time  (CPU time of this process {1000 * cpu_seconds[r]:9.1f} ms/step)"
            )
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sslbook.benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="name", required=True)
    sub.add_parser("hardware", help="one line naming the device figures are measured on")
    m = sub.add_parser("mae-encoder", help="MAE encoder time against the mask ratio")
    m.add_argument("--backbone", default="vit_tiny")
    m.add_argument("--batch", type=int, default=256)
    m.add_argument("--image-size", type=int)
    m.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    if args.name == "hardware":
        print(hardware())
    if args.name == "mae-encoder":
        mae_encoder(args.backbone, args.batch, args.image_size, steps=args.steps)


if __name__ == "__main__":
    main()

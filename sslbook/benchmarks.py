"""Speed benchmarks: figures printed with the hardware they were measured on (not timed tests).

    python -m sslbook.benchmarks mae-encoder [--backbone vit_tiny] [--batch 256] [--steps 5]

``mae-encoder``: MAE's encoder runs on the visible patches only, so its cost should scale with
(1 − mask ratio). The benchmark times a forward + backward pass of the ViT encoder at several mask
ratios, at the same batch, with bf16 autocast and the fused attention kernel on CUDA.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch


def hardware() -> str:
    """One line naming the device the figures were measured on."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} threads of {os.cpu_count()} cores, torch {torch.__version__}"


def mae_encoder(backbone: str = "vit_tiny", batch_size: int = 256, image_size: int | None = None,
                ratios=(0.0, 0.5, 0.75, 0.9), steps: int = 5, warmup: int = 2, device=None, verbose: bool = True) -> dict:
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
    result = dict(hardware=hardware(), backbone=backbone, batch_size=batch_size, image_size=size, patches=L,
                  tokens=tokens, seconds=seconds, cpu_seconds=cpu_seconds, relative={r: seconds[r] / seconds[ratios[0]] for r in ratios})
    if verbose:
        print(f"MAE encoder, {backbone} at {size} px ({L} patches), batch {batch_size}, forward + backward; {result['hardware']}")
        for r in ratios:
            print(f"  mask {r:4.0%}: {tokens[r]:4d} visible patches  {1000 * seconds[r]:9.1f} ms/step  "
                  f"{result['relative'][r]:5.2f} × the unmasked time  (CPU time of this process {1000 * cpu_seconds[r]:9.1f} ms/step)")
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sslbook.benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="name", required=True)
    m = sub.add_parser("mae-encoder", help="MAE encoder time against the mask ratio")
    m.add_argument("--backbone", default="vit_tiny")
    m.add_argument("--batch", type=int, default=256)
    m.add_argument("--image-size", type=int)
    m.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    if args.name == "mae-encoder":
        mae_encoder(args.backbone, args.batch, args.image_size, steps=args.steps)


if __name__ == "__main__":
    main()

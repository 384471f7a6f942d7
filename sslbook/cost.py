"""What a module costs: its parameters, its throughput and its peak memory (the figures beside the
accuracies in the comparison chapter; :mod:`sslbook.benchmarks` times a whole training step).
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for a module with neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _peak_rss_mb() -> float | None:
    """The process's peak resident set size so far, in MiB (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _as_scalar(out) -> torch.Tensor:
    """Reduce a module's output (a tensor, or a tuple/list/dict of them) to one scalar for backward."""
    if isinstance(out, torch.Tensor):
        return out.float().mean()
    if isinstance(out, dict):
        out = list(out.values())
    return sum(_as_scalar(o) for o in out if isinstance(o, (torch.Tensor, list, tuple, dict)))


def measure_throughput(
    module: nn.Module,
    image_size: int | tuple[int, int],
    batch_size: int = 64,
    steps: int = 10,
    warmup: int = 2,
    device: torch.device | str | None = None,
    train: bool = False,
) -> dict:
    """Time ``module`` on random float images batch_size×3×H×W in [0, 1].

    ``train=False``: forward passes under ``torch.no_grad`` in eval mode. ``train=True``: forward
    and backward (of the output's mean) in train mode; no optimiser step, and the module's
    gradients, buffers (batch-norm statistics) and train/eval flags are restored afterwards.
    ``warmup`` untimed steps come first (kernel selection, allocator warm-up).

    Returns:
        dict with ``images_per_s``, ``ms_per_batch``, ``peak_mem_mb``, ``device`` (str),
        ``batch_size``, ``image_size`` and ``train``. On CUDA ``peak_mem_mb`` is
        ``torch.cuda.max_memory_allocated`` during the measurement (weights included); on the CPU it
        is the growth of the process's *maximum* resident set size (``resource.getrusage``), an
        approximation that reads 0 when the process had already used more memory earlier.
    """
    device = torch.device(device) if device is not None else module_device(module)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    module.to(device)
    modes = [(m, m.training) for m in module.modules()]
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    grads = {name: p.grad for name, p in module.named_parameters()}
    module.train(train)
    x = torch.rand(batch_size, 3, h, w, device=device, generator=torch.Generator(device=device).manual_seed(0))
    cuda = device.type == "cuda"

    def step():
        if train:
            module.zero_grad(set_to_none=True)
            _as_scalar(module(x)).backward()
        else:
            with torch.no_grad():
                module(x)

    try:
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        rss_before = _peak_rss_mb()
        for _ in range(warmup):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        if cuda:
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            rss_after = _peak_rss_mb()
            peak = None if rss_before is None else rss_after - rss_before
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for name, b in module.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
        for name, p in module.named_parameters():
            p.grad = grads.get(name)
    elapsed = max(elapsed, 1e-9)
    return {
        "images_per_s": batch_size * steps / elapsed,
        "ms_per_batch": 1000 * elapsed / max(steps, 1),
        "peak_mem_mb": peak,
        "device": str(device),
        "batch_size": batch_size,
        "image_size": (h, w),
        "train": train,
    }

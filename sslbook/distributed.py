"""Distributed helpers. Every one is a no-op on a single process, so nothing needs a launcher.

Under ``torchrun --nproc_per_node=K`` the environment carries RANK, LOCAL_RANK and WORLD_SIZE;
:func:`init` starts the process group (NCCL on GPUs, gloo on CPUs) and pins each process to its GPU.

**BatchNorm under K processes.** By default every process normalises with the statistics of its own
share of the batch (B/K images): what most papers ran on their 8 GPUs, and what MoCo's shuffled BN
relies on. A recipe that needs the statistics of the whole global batch (SimCLR's "global BN", BYOL,
SimSiam, Barlow Twins, MoCo v3) sets ``sync_bn=True``; :func:`wrap_ddp` then converts every BatchNorm
layer (:func:`sync_batchnorm`: PyTorch's ``SyncBatchNorm`` on GPUs, :class:`GlobalBatchNorm` on CPUs,
where PyTorch's refuses to run), so K processes compute what one process computes on the whole batch.
The other way round, :func:`split_batchnorm` makes one process compute what K processes with
per-process BN compute: BN statistics over K consecutive slices of the batch. A module that sets
``keep_local_bn = True`` (MoCo's key encoder, whose BN must see only this process's shuffled keys) is
left as it is by both conversions.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

from sslbook import losses


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """True on rank 0: the process that logs and writes checkpoints."""
    return rank() == 0


def init(backend: str | None = None) -> torch.device:
    """Start the process group when launched by torchrun; return this process's device."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_distributed():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every process (a decision only rank 0 can take, e.g. from its kNN monitor)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def any_flag(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (e.g. a stop signal that reached one of them)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over processes (a copy; ``x`` itself is unchanged)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()


@torch.no_grad()
def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (N×…) from every process along dim 0, without gradients (MoCo's keys)."""
    if not is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process with gradients flowing back (SimCLR's negatives): the losses'
    own gather (:func:`sslbook.losses.all_gather_with_grad`), here beside the other collectives."""
    return losses.all_gather_with_grad(x)


class _AllReduceSum(torch.autograd.Function):
    """Sum of ``x`` over processes; its backward sums the gradients over processes too (every process's
    output depends on every process's ``x``)."""

    @staticmethod
    def forward(ctx, x):
        y = x.detach().clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        g = grad.detach().clone()
        dist.all_reduce(g)
        return g


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Σ over processes of ``x``, differentiable (global batch statistics); ``x`` itself on one process."""
    if not is_distributed():
        return x
    return _AllReduceSum.apply(x)


class _AnyDimBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """A BatchNorm for N×C, N×C×L or N×C×H×W inputs (it replaces BatchNorm1d/2d/3d layers alike)."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"{type(self).__name__} expects N×C(×…) input, got {x.dim()}-D")

    def _update_factor(self) -> float:
        """Count this batch and return the weight of its statistics in the running averages."""
        if not self.track_running_stats:
            return 0.0
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else float(self.momentum)

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, unbiased_var: torch.Tensor, factor: float) -> None:
        """Fold this batch's statistics into the running averages (as ``torch.nn.BatchNorm`` does)."""
        if self.track_running_stats:
            self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            self.running_var.mul_(1 - factor).add_(unbiased_var.detach(), alpha=factor)

    @classmethod
    def from_batchnorm(cls, bn: torch.nn.modules.batchnorm._BatchNorm, **kwargs):
        """The same layer (the very same weight, bias and running-statistics tensors) as ``cls``."""
        new = cls(
            bn.num_features,
            eps=bn.eps,
            momentum=bn.momentum,
            affine=bn.affine,
            track_running_stats=bn.track_running_stats,
            **kwargs,
        )
        new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var, new.num_batches_tracked = (
            bn.running_mean,
            bn.running_var,
            bn.num_batches_tracked,
        )
        new.train(bn.training)
        return new


class GlobalBatchNorm(_AnyDimBatchNorm):
    """BatchNorm with the statistics of the **global** batch, every process's samples (SimCLR's "global BN").

    In training under torchrun: mean μ = Σ_processes Σ x / n and biased variance σ² = Σ_processes Σ (x − μ)² / n
    over all n values of a channel (two differentiable all-reduces, so the gradient also flows through
    the other processes' statistics), y = γ (x − μ) / √(σ² + ε) + β, and the running averages take μ and
    the unbiased variance σ²·n/(n − 1), as ``torch.nn.BatchNorm`` does on one process. On one process, or
    in eval mode, it is ``torch.nn.BatchNorm``. Written for CPUs (gloo), where ``torch.nn.SyncBatchNorm``
    refuses to run; on GPUs :func:`sync_batchnorm` uses PyTorch's, which computes the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        factor = self._update_factor()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x if x.dtype == torch.float64 else x.float()  # statistics in float32 at least, float64 kept
        local = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(local)
        n = float(local)
        mean = all_reduce_sum_with_grad(xf.sum(dims)) / n
        centred = xf - mean.view(shape)
        var = all_reduce_sum_with_grad((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        self._track(mean, var * (n / max(n - 1, 1)), factor)
        return y.to(x.dtype)


class SplitBatchNorm(_AnyDimBatchNorm):
    """BatchNorm over ``splits`` consecutive equal slices of the batch, each with its own statistics: on one
    process, what ``splits`` processes with per-process BN compute (slice r = process r's share).

    The running averages take the mean over the slices of their statistics, which is the mean over
    the processes of their running averages after the same step. In eval mode (or with ``splits=1``)
    it is ``torch.nn.BatchNorm``.
    """

    def __init__(self, num_features, splits: int = 1, **kwargs):
        super().__init__(num_features, **kwargs)
        if int(splits) < 1:
            raise ValueError(f"SplitBatchNorm needs splits >= 1, got {splits}")
        self.splits = int(splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.splits == 1:
            return super().forward(x)
        self._check_input_dim(x)
        if x.shape[0] % self.splits:
            raise ValueError(f"SplitBatchNorm: a batch of {x.shape[0]} does not split into {self.splits} equal slices")
        factor = self._update_factor()
        chunks = x.chunk(self.splits)
        out = torch.cat([F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps) for c in chunks])
        if self.track_running_stats:
            dims = [0, *range(2, x.dim())]
            with torch.no_grad():
                self._track(
                    torch.stack([c.float().mean(dims) for c in chunks]).mean(0),
                    torch.stack([c.float().var(dims, unbiased=True) for c in chunks]).mean(0),
                    factor,
                )
        return out


def convert_batchnorm(module: torch.nn.Module, make) -> torch.nn.Module:
    """Replace every BatchNorm layer below ``module`` by ``make(layer)``, in place, skipping the subtrees
    of modules with ``keep_local_bn = True``. Returns ``module`` (or the replacement if it is a layer)."""
    # any module, not only a Method (MoCo marks its key encoder); Method declares the attribute and its default
    if getattr(module, "keep_local_bn", False):
        return module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return make(module)
    for name, child in module.named_children():
        new = convert_batchnorm(child, make)
        if new is not child:
            setattr(module, name, new)
    return module


def sync_batchnorm(module: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
    """Every BatchNorm layer of ``module`` normalised with global-batch statistics (see the module doc):
    ``torch.nn.SyncBatchNorm`` on GPUs, :class:`GlobalBatchNorm` elsewhere. Parameters and buffers are
    kept (the same tensors), so an optimiser built before or after sees the same parameters."""
    on_gpu = (device.type if device is not None else next(module.parameters()).device.type) == "cuda"

    def make(bn):
        if isinstance(bn, (torch.nn.SyncBatchNorm, GlobalBatchNorm)):
            return bn
        if on_gpu:
            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(bn)
        return GlobalBatchNorm.from_batchnorm(bn)

    return convert_batchnorm(module, make)


def split_batchnorm(module: torch.nn.Module, splits: int) -> torch.nn.Module:
    """Every BatchNorm layer of ``module`` as a :class:`SplitBatchNorm` over ``splits`` slices: one process
    reproducing a ``splits``-process run with per-process BN (the reference of the distributed tests)."""
    return convert_batchnorm(module, lambda bn: SplitBatchNorm.from_batchnorm(bn, splits=splits))


def wrap_ddp(module: torch.nn.Module, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around ``module`` (with global-batch BN if ``sync_bn``); identity on one process.

    The conversion is in place: ``module`` keeps its attributes (a momentum copy such as BYOL's target is
    converted with the rest, a ``keep_local_bn`` module such as MoCo's key encoder is not)."""
    if not is_distributed():
        return module
    if sync_bn:
        module = sync_batchnorm(module, device)
    ids = [device.index] if device.type == "cuda" else None
    # broadcast_buffers=False: DDP would otherwise send rank 0's buffers before every forward, MoCo's 65,536-key
    # queue (33 MB) and InstDisc/PIRL's 50,000-slot memory bank (26 MB) among them. The methods keep their own
    # buffers equal on every process (the keys and bank updates are all-gathered, DINO's centre is a global
    # mean; tests/test_distributed.py checks a step), and BN's running statistics are per process by design
    # unless sync_bn (rank 0's are the ones checkpointed and evaluated).
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()

"""Run by tests/test_distributed.py under `torchrun --nproc_per_node=2` (gloo, CPU).

Writes what it measured to OUT/rank{R}.json; the test asserts on those files.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as tdist

from sslbook import distributed as dist

out_dir = Path(sys.argv[1])
data_root = sys.argv[2]
device = dist.init()
rank, world = dist.rank(), dist.world_size()
result = {"rank": rank, "world": world, "backend": tdist.get_backend()}

# 1. all_gather_with_grad: values from every process, gradients back to their owner.
x = (torch.arange(4.0) + 10 * rank).requires_grad_()
gathered = dist.all_gather_with_grad(x)
weights = torch.arange(4.0 * world)
(gathered * weights).sum().backward()
result["gathered"] = gathered.tolist()
# every process's loss uses this process's slice with the same weights: the gradient is world × slice
result["grad_ok"] = torch.allclose(x.grad, world * weights[4 * rank : 4 * rank + 4])

# 2. A DDP step on half the batch per process equals one step on the whole batch in one process.
torch.manual_seed(0)
X, Y = torch.randn(16, 5), torch.randn(16, 3)
net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
ref = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
ref.load_state_dict(net.state_dict())
ddp = dist.wrap_ddp(net, device)
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
half = slice(8 * rank, 8 * rank + 8)
torch.nn.functional.mse_loss(ddp(X[half]), Y[half]).backward()
opt.step()
ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
torch.nn.functional.mse_loss(ref(X), Y).backward()
ref_opt.step()
result["ddp_max_diff"] = max(float((a - b).abs().max()) for a, b in zip(net.parameters(), ref.parameters()))

# 3. Contrastive losses see every process's negatives: the mean of the per-process losses equals the
#    one-process loss on the whole batch, and each process's gradient is world x its rows of the full one.
import sslbook.losses as losses_mod  # noqa: E402
from sslbook.losses import info_nce, nt_xent  # noqa: E402


def one_process(fn, *args, **kwargs):
    """The loss as a single process computes it (no gathering): the reference."""
    saved, losses_mod._world = losses_mod._world, lambda: (0, 1)
    try:
        return fn(*args, **kwargs)
    finally:
        losses_mod._world = saved


torch.manual_seed(1)
Z1, Z2 = torch.randn(8, 6), torch.randn(8, 6)
rows = slice(4 * rank, 4 * rank + 4)
z1 = Z1[rows].clone().requires_grad_()
local = nt_xent(z1, Z2[rows], temperature=0.5)
local.backward()
full_z1 = Z1.clone().requires_grad_()
full = one_process(nt_xent, full_z1, Z2, temperature=0.5)
full.backward()
result["nt_xent_diff"] = abs(float(dist.all_reduce_mean(local.detach())) - float(full))
result["nt_xent_grad_diff"] = float((z1.grad / world - full_z1.grad[rows]).abs().max())
q = Z1[rows].clone().requires_grad_()  # MoCo v3: queries with gradients, keys (momentum encoder) without
moco_local = info_nce(q, Z2[rows], None, temperature=0.2)
moco_local.backward()
full_q = Z1.clone().requires_grad_()
moco_full = one_process(info_nce, full_q, Z2, None, temperature=0.2)
moco_full.backward()
result["info_nce_diff"] = abs(float(dist.all_reduce_mean(moco_local.detach())) - float(moco_full))
result["info_nce_grad_diff"] = float((q.grad / world - full_q.grad[rows]).abs().max())
# Barlow Twins standardises over the whole (gathered) batch: every process computes the full loss.
from sslbook.losses import barlow_twins  # noqa: E402

b1 = Z1[rows].clone().requires_grad_()
local_bt = barlow_twins(b1, Z2[rows], lambd=0.01)
local_bt.backward()
full_b1 = Z1.clone().requires_grad_()
full_bt = one_process(barlow_twins, full_b1, Z2, lambd=0.01)
full_bt.backward()
result["barlow_diff"] = abs(float(local_bt) - float(full_bt))
# DDP averages the processes' gradients: world × (its rows' gradient) / world = the full-batch gradient
result["barlow_grad_diff"] = float((b1.grad / world - full_b1.grad[rows]).abs().max())

# 4. The sslbook trainer, unchanged, under torchrun: same weights everywhere, rank-0 checkpoint.
from sslbook.trainer import train  # noqa: E402

res = train(
    "supervised",
    preset="tiny",
    data="shapes",
    backbone="convnet_small",
    batch_size=64,
    epochs=1,
    max_steps=3,
    data_kwargs=dict(n_train=256, n_test=128, root=data_root),
    eval_protocols=("knn",),
    progress=False,
    out=str(out_dir / "run"),
)
flat = torch.cat([p.detach().flatten() for p in res.method.parameters()])
result["param_checksum"] = float(flat.double().sum())
result["steps"] = [h["step"] for h in res.history]
result["metrics"] = res.metrics
(out_dir / f"rank{rank}.json").write_text(json.dumps(result))
dist.cleanup()

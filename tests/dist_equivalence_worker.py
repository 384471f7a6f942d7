"""Run by tests/test_distributed.py under `torchrun --nproc_per_node=2` (gloo, CPU).

1. For each case of tests/dist_equivalence.py: the method built by sslbook's registry, DDP-wrapped by
   :func:`sslbook.distributed.wrap_ddp` (BatchNorm converted as the config says), one training step on
   this process's half of a fixed global batch; the state after the step goes to OUT/<case>_rank<R>.pt.
2. The trainer under torchrun: two epochs of a method that records the data-set indices it is given
   (the distributed sampler, reseeded each epoch), the learning rate of the first step (the global
   batch in the scaling rule), and the refusal of a batch that does not split over the processes.

Writes what it measured to OUT/equivalence_rank{R}.json; the test asserts on those files.
"""

import json
import sys
from pathlib import Path

import torch
from torch import nn

import sslbook
from sslbook import distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
import dist_equivalence as E  # noqa: E402

out_dir = Path(sys.argv[1])
data_root = sys.argv[2]
device = dist.init()
rank, world = dist.rank(), dist.world_size()
assert world == E.WORLD, f"run with --nproc_per_node={E.WORLD}"
result = {"rank": rank, "world": world, "sslbook": sslbook.__file__, "cases": {}, "bn_types": {}}


def _gather_without_grad_from_others(x):
    """A wrong gather, for the control case: the other processes' embeddings come without gradients."""
    parts = losses_mod.all_gather_with_grad(x).chunk(world)
    return torch.cat([p if i == rank else p.detach() for i, p in enumerate(parts)])


# 1. One step of each case on this process's half of the batch.
import sslbook.losses as losses_mod  # noqa: E402

for case in E.CASES:
    cfg, method = E.build(case)
    views, labels = E.batch(method)  # the whole global batch, the same on both processes …
    views, labels = E.share(views, labels, rank)  # … of which this process takes its rows
    model = dist.wrap_ddp(method, device, sync_bn=cfg.sync_bn)  # as the trainer wraps it
    result["bn_types"][case] = sorted(
        {type(m).__name__ for m in method.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    )
    if hasattr(method, "encoder_k"):
        result["bn_types"][case + ".encoder_k"] = sorted(
            {type(m).__name__ for m in method.encoder_k.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        )
    saved = losses_mod._gather
    if case == "simclr_negatives_without_grad":
        losses_mod._gather = _gather_without_grad_from_others
    try:
        outputs = E.step(model, method, cfg, views, labels)
    finally:
        losses_mod._gather = saved
    result["cases"][case] = {"loss": float(dist.all_reduce_mean(torch.tensor(outputs["loss"])))}
    torch.save(E.state(method), out_dir / f"{case}_rank{rank}.pt")

# 1b. wrap_ddp leaves out DDP's per-step buffer broadcast: the methods keep their buffers equal themselves. Three
# MoCo v2 steps (the queue, its pointer, the key encoder move every step), then every state entry but the
# per-process BN statistics compared across the processes.
cfg, method = E.build("moco_v2")
model = dist.wrap_ddp(method, device, sync_bn=cfg.sync_bn)
assert not model.broadcast_buffers
for i in range(3):
    views, labels = E.share(*E.batch(method), rank)
    E.step(model, method, cfg, views, labels, shuffle_seed=i)
unequal = []
for key, value in method.state_dict().items():
    if E.is_bn_statistic(key) or key.endswith("num_batches_tracked"):
        continue
    both = dist.all_gather(value.detach().double().reshape(1, -1))
    if not torch.equal(both[0], both[1]):
        unequal.append(key)
result["moco_unequal_after_3_steps"] = unequal
result["moco_queue_ptr_after_3_steps"] = int(method.queue.ptr)

# 2. The trainer: sampler, learning-rate rule, batch refusal.
from sslbook.methods import Method, register  # noqa: E402
from sslbook.trainer import train  # noqa: E402


class IndexRecorder(Method):
    """Records the data-set index of every image the trainer gives it; a trivial loss on the backbone."""

    name = "index_recorder"
    needs_indices = True

    def __init__(self, backbone, info, image_size):
        super().__init__(backbone, info, image_size)
        self.head = nn.Linear(backbone.out_dim, 1)
        self.seen: list[list[int]] = []

    @torch.no_grad()
    def make_views(self, images, labels, indices=None):
        self.seen.append([int(i) for i in indices])
        return [images]

    def forward(self, views, labels):
        return {"loss": self.head(self.backbone(views[0])).pow(2).mean()}


register("index_recorder", IndexRecorder)
common = dict(
    preset="tiny",
    data="shapes",
    backbone="convnet_small",
    optimizer="sgd",
    base_lr=0.32,
    warmup_epochs=0,
    data_kwargs=dict(n_train=64, n_test=32, root=data_root),
    eval_protocols=(),
    monitor_knn=0,
    progress=False,
    log_every=1,
)
epoch_ends: list[int] = []
res = train(
    "index_recorder", batch_size=16, epochs=2, callbacks=(lambda epoch, m, h: epoch_ends.append(len(m.seen)),), **common
)
seen = res.method.seen
result["epochs"] = [sum(seen[a:b], []) for a, b in zip([0, *epoch_ends[:-1]], epoch_ends)]
result["first_lr"] = res.history[0]["lr"]
result["steps"] = res.steps
# a kNN target met at the initialisation: only rank 0 monitors, and its decision stops both processes
hit = train("index_recorder", batch_size=16, epochs=2, **{**common, "monitor_knn": 32, "target_knn": 0.0})
result["target"] = dict(
    steps=hit.steps, monitor_epochs=[m["epoch"] for m in hit.monitor], reached=hit.target_reached is not None
)
try:
    train("index_recorder", batch_size=15, epochs=1, **common)
    result["odd_batch_error"] = None
except ValueError as e:
    result["odd_batch_error"] = str(e)

(out_dir / f"equivalence_rank{rank}.json").write_text(json.dumps(result))
dist.cleanup()

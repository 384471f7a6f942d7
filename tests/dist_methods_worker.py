"""Run by tests/test_distributed.py under `torchrun --nproc_per_node=2` (gloo, CPU): every registered method
trains a few steps through the trainer with DDP, each process on its half of the global batch.

Writes OUT/methods_rank{R}.json: per method, None if it trained, else the error; and a checksum of its
state after training (DDP keeps the replicas equal: the test compares the two ranks).
"""

import json
import sys
import traceback
from pathlib import Path

import dist_equivalence as E  # tests/dist_equivalence.py, beside this worker

from sslbook import distributed as dist
from sslbook.methods import list_methods
from sslbook.trainer import train

out_dir, data_root = Path(sys.argv[1]), sys.argv[2]
device = dist.init()
rank = dist.rank()
result = {"rank": rank, "world": dist.world_size(), "errors": {}, "checksums": {}, "moved": {}, "steps": {}}
# the tiny recipe (its backbone, views and heads) on 64 small generated images, global batch 16
kw = dict(
    batch_size=16,
    progress=False,
    eval_protocols=(),
    monitor_knn=0,
    data_kwargs=dict(n_train=64, n_test=32, root=data_root),
)


def checksums(method) -> dict[str, float]:
    # every floating-point entry of the state but BN's running statistics (per process by design)
    return {
        k: float(v.double().sum())
        for k, v in method.state_dict().items()
        if v.is_floating_point() and not E.is_bn_statistic(k)
    }


for name in list_methods():
    try:
        before = checksums(train(name, "tiny", epochs=0, **kw).method)  # the same seeded initialisation
        res = train(name, "tiny", epochs=1, max_steps=2, **kw)
        result["checksums"][name] = after = checksums(res.method)
        result["moved"][name] = max(abs(after[k] - before[k]) for k in after)
        result["steps"][name] = res.steps
        result["errors"][name] = None
    except Exception:  # noqa: BLE001 - reported per method, the test names it
        result["errors"][name] = traceback.format_exc()[-2000:]
(out_dir / f"methods_rank{rank}.json").write_text(json.dumps(result))
dist.cleanup()

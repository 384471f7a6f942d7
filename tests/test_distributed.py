"""The distributed path under `torchrun --nproc_per_node=2` with the gloo backend, and the one-process no-ops."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from sslbook import distributed as dist


def test_helpers_are_noops_on_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    assert dist.all_gather(x) is x and dist.all_gather_with_grad(x) is x
    assert dist.all_reduce_mean(x) is x
    net = torch.nn.Linear(2, 2)
    assert dist.wrap_ddp(net, torch.device("cpu")) is net
    dist.barrier()


def test_torchrun_two_processes(tmp_path, shapes_root):
    worker = Path(__file__).with_name("dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port, so parallel test runs on one machine do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(worker), str(tmp_path), str(shapes_root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["backend"] == "gloo"
    assert r0["gathered"] == r1["gathered"] == [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]
    assert r0["grad_ok"] and r1["grad_ok"]
    assert r0["ddp_max_diff"] < 1e-6 and r1["ddp_max_diff"] < 1e-6
    for r in (r0, r1):  # SimCLR's and MoCo v3's losses gather every process's embeddings
        assert r["nt_xent_diff"] < 1e-5 and r["nt_xent_grad_diff"] < 1e-6 and r["info_nce_diff"] < 1e-5
        assert r["barlow_diff"] < 1e-4 and r["barlow_grad_diff"] < 1e-5
    assert r0["param_checksum"] == r1["param_checksum"]  # DDP kept the replicas identical
    assert r0["steps"] == [1, 2, 3]
    assert "knn_top1" in r0["metrics"] and r1["metrics"] == {}  # only rank 0 evaluates
    assert (tmp_path / "run" / "last.pt").is_file()
    assert not list((tmp_path / "run").glob("*.tmp"))

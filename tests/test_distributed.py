"""The distributed path under `torchrun --nproc_per_node=2` with the gloo backend, and the one-process no-ops."""
import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sslbook import distributed as dist


def test_helpers_are_noops_on_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    assert dist.all_gather(x) is x and dist.all_gather_with_grad(x) is x
    assert dist.all_reduce_sum_with_grad(x) is x
    assert dist.all_reduce_mean(x) is x
    net = torch.nn.Linear(2, 2)
    assert dist.wrap_ddp(net, torch.device("cpu")) is net
    bn = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
    assert dist.wrap_ddp(bn, torch.device("cpu"), sync_bn=True) is bn and type(bn[1]) is nn.BatchNorm1d
    dist.barrier()


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5), nn.BatchNorm1d(5))


def test_global_batchnorm_on_one_process_is_batchnorm():
    net, ref = _bn_net(), _bn_net()
    params = list(net.parameters())
    dist.sync_batchnorm(net, torch.device("cpu"))
    assert [type(net[i]).__name__ for i in (1, 5)] == ["GlobalBatchNorm", "GlobalBatchNorm"]
    assert list(net.parameters()) == params  # the same tensors: an optimiser built before still holds them
    x = torch.randn(8, 3, 6, 6)
    assert torch.allclose(net(x), ref(x), atol=1e-6)
    for a, b in zip(net.buffers(), ref.buffers()):
        assert torch.equal(a, b)
    net.eval(), ref.eval()
    assert torch.allclose(net(x), ref(x), atol=1e-6)


def test_split_batchnorm_is_per_slice_batchnorm_with_averaged_running_statistics():
    net, halves = _bn_net(), [_bn_net(), _bn_net()]
    dist.split_batchnorm(net, 2)
    assert type(net[1]).__name__ == "SplitBatchNorm" and net[1].splits == 2
    x = torch.randn(8, 3, 6, 6)
    y = net(x)
    y.square().sum().backward()
    ys = [h(x[4 * r:4 * r + 4]) for r, h in enumerate(halves)]  # two "processes", per-process BN
    sum(t.square().sum() for t in ys).backward()
    assert torch.allclose(y, torch.cat(ys), atol=1e-6)
    for p, p0, p1 in zip(net.parameters(), *(h.parameters() for h in halves)):
        assert torch.allclose(p.grad, p0.grad + p1.grad, atol=1e-5)
    for i in (1, 5):
        for name in ("running_mean", "running_var"):
            mean = (getattr(halves[0][i], name) + getattr(halves[1][i], name)) / 2
            assert torch.allclose(getattr(net[i], name), mean, atol=1e-6)
        assert not torch.allclose(halves[0][i].running_mean, halves[1][i].running_mean)
        assert int(net[i].num_batches_tracked) == 1
    assert not torch.allclose(y, _bn_net()(x), atol=1e-3)  # whole-batch BN is something else
    with pytest.raises(ValueError, match="equal slices"):
        net(torch.randn(7, 3, 6, 6))


def test_conversions_leave_keep_local_bn_modules_alone():
    from sslbook.data.base import DataInfo
    from sslbook.methods import get_method
    from sslbook.models import build_backbone

    info = DataInfo("noise", ["a", "b"], 16)
    moco = get_method("moco_v2")(build_backbone("convnet_small", info), info, 16, queue_size=32, mlp_hidden=32)
    assert moco.encoder_k.keep_local_bn
    dist.sync_batchnorm(moco, torch.device("cpu"))
    kinds = lambda m: {type(x).__name__ for x in m.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)}  # noqa: E731
    assert kinds(moco.backbone) == {"GlobalBatchNorm"} and kinds(moco.encoder_k) == {"BatchNorm2d"}
    byol = get_method("byol")(build_backbone("convnet_small", info), info, 16, proj_dim=8, hidden_dim=16)
    dist.split_batchnorm(byol, 2)
    assert kinds(byol) == {"SplitBatchNorm"}  # the target network too: it is a submodule like any other
    # the momentum update still pairs every target tensor with its online tensor
    before = copy.deepcopy(byol.target_backbone.state_dict())
    byol.on_step_end(0, 10)
    assert byol.target_backbone.state_dict().keys() == before.keys()


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

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

import sslbook
from sslbook import distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
import dist_equivalence as E  # noqa: E402

ATOL = RTOL = 1e-5  # a two-process step against one process on the whole batch


def _torchrun(worker: str, *args) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node=2 tests/<worker> args…`` importing this checkout's sslbook
    (``worker="-m"``: ``args`` start with a module to run, e.g. ``-m sslbook bench …``)."""
    root = str(Path(sslbook.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    with socket.socket() as sock:  # a free port, so parallel test runs on one machine do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        worker if worker == "-m" else str(Path(__file__).with_name(worker)),
        *map(str, args),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


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
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5), nn.BatchNorm1d(5)
    )


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
    ys = [h(x[4 * r : 4 * r + 4]) for r, h in enumerate(halves)]  # two "processes", per-process BN
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


def test_full_recipes_ask_for_global_bn_where_the_paper_does():
    from sslbook.config import resolve

    for name in (
        "simclr",
        "byol",
        "simsiam",
        "barlow_twins",
        "moco_v3",
    ):  # global / synchronised BN in the paper or its code
        assert resolve(name, "full").sync_bn, name
    for name in ("moco_v1", "moco_v2", "supervised"):  # MoCo v1/v2: per-GPU BN, keys shuffled across GPUs
        assert not resolve(name, "full").sync_bn, name


def test_bench_under_torchrun_times_the_global_batch_and_prints_once():
    """``torchrun --nproc_per_node=2 -m sslbook bench``: each process steps on half of the global batch; only
    rank 0 prints, and the FLOPs of a step are those of the whole global batch, as one process counts them."""
    from sslbook.benchmarks import bench

    argv = [
        "simclr",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--backbone",
        "convnet_small",
        "--data",
        "random",
        "--images",
        "96",
        "--batch-size",
        "32",
    ]
    proc = _torchrun("-m", "sslbook", "bench", *argv)
    json_lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1, proc.stdout  # rank 0 alone prints its table and its JSON line
    r = json.loads(json_lines[0])
    assert r["processes"] == 2 and r["batch_size"] == 32 and "on 2 process(es)" in proc.stdout
    assert r["images_per_s"] > 0 and r["seconds_per_epoch"] == pytest.approx(50000 / r["images_per_s"])
    one = bench(
        "simclr",
        "tiny",
        steps=1,
        warmup=0,
        batch_size=32,
        backbone="convnet_small",
        data="random",
        images=96,
        verbose=False,
    )
    assert one["processes"] == 1
    assert r["flops_per_step"] == pytest.approx(one["flops_per_step"], rel=1e-3)


def test_torchrun_two_processes(tmp_path, shapes_root):
    _torchrun("dist_worker.py", tmp_path, shapes_root)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["backend"] == "gloo"
    assert r0["gathered"] == r1["gathered"] == [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]
    assert r0["grad_ok"] and r1["grad_ok"]
    assert r0["ddp_max_diff"] < 1e-6 and r1["ddp_max_diff"] < 1e-6
    for r in (r0, r1):  # SimCLR's and MoCo v3's losses gather every process's embeddings
        assert r["nt_xent_diff"] < 1e-5 and r["nt_xent_grad_diff"] < 1e-6 and r["info_nce_diff"] < 1e-5
        assert r["info_nce_grad_diff"] < 1e-6
        assert r["barlow_diff"] < 1e-4 and r["barlow_grad_diff"] < 1e-5
    assert r0["param_checksum"] == r1["param_checksum"]  # DDP kept the replicas identical
    assert r0["steps"] == [1, 2, 3]
    assert "knn_top1" in r0["metrics"] and r1["metrics"] == {}  # only rank 0 evaluates
    assert (tmp_path / "run" / "last.pt").is_file()
    assert not list((tmp_path / "run").glob("*.tmp"))


def _compare(got: list[dict], want: dict, per_process_bn: bool) -> tuple[float, list[str]]:
    """Max |two-process − one-process| over every parameter and buffer, and the keys beyond the tolerance.

    Each process's state is compared, except BN running statistics under per-process BN: each process
    keeps those of its own half, and their mean is what the one-process split-BN reference keeps."""
    worst, bad = 0.0, []
    for key, w in want.items():
        if per_process_bn and E.is_bn_statistic(key):
            candidates = [(got[0][key] + got[1][key]) / 2]
        else:
            candidates = [got[0][key], got[1][key]]
        for g in candidates:
            worst = max(worst, float((g - w).abs().max()) if w.numel() else 0.0)
            if not torch.allclose(g, w, rtol=RTOL, atol=ATOL):
                bad.append(key)
    return worst, bad


@pytest.fixture(scope="module")
def equivalence_run(tmp_path_factory, shapes_root):
    """tests/dist_equivalence_worker.py on 2 gloo processes: its output folder and each rank's measurements."""
    out = tmp_path_factory.mktemp("equivalence")
    _torchrun("dist_equivalence_worker.py", out, shapes_root)
    r0, r1 = (json.loads((out / f"equivalence_rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert Path(r0["sslbook"]).resolve() == Path(sslbook.__file__).resolve()  # the worker ran this checkout
    return out, r0, r1


def _reference(case: str, shuffle_seed: int = 99):
    """The case's step in this (single) process on the whole batch: no DDP, nothing gathered. Per-process
    BN of the two-process run becomes split BN over two halves (MoCo's keys: bn_splits = 2)."""
    name, sync_bn, expect = E.CASES[case]
    cfg, ref = E.build(case)
    before = E.state(ref)
    params = [k for k, _ in ref.named_parameters()]  # the target / key encoders' too
    views, labels = E.batch(ref)
    if not sync_bn and expect == "equal":
        dist.split_batchnorm(ref, E.WORLD)
    out = E.step(ref, ref, cfg, views, labels, shuffle_seed)
    after = E.state(ref)
    moved = max(float((after[k] - before[k]).abs().max()) for k in params)
    return after, before, out, moved


def test_a_two_process_step_equals_a_one_process_step_on_the_whole_batch(equivalence_run):
    """SimCLR (global BN, negatives gathered with gradients), BYOL (global BN, target network) and MoCo v2
    (per-process BN, keys shuffled across the processes, the queue): DDP on 2 gloo processes, each on half
    the batch, ends the step with the parameters and buffers of one process on the whole batch."""
    out_dir, r0, r1 = equivalence_run
    # BatchNorm as the config says: global where sync_bn, the target network included; MoCo's key encoder stays per process
    assert r0["bn_types"]["simclr"] == r0["bn_types"]["byol"] == ["GlobalBatchNorm"]
    assert r0["bn_types"]["moco_v2"] == ["BatchNorm2d"]
    assert r0["bn_types"]["moco_v2_sync_bn"] == ["BatchNorm2d", "GlobalBatchNorm"]
    assert r0["bn_types"]["moco_v2_sync_bn.encoder_k"] == ["BatchNorm2d"]

    measured = {}
    for case, (name, sync_bn, expect) in E.CASES.items():
        want, before, out, moved = _reference(case)
        got = [torch.load(out_dir / f"{case}_rank{r}.pt", weights_only=True) for r in (0, 1)]
        assert got[0].keys() == got[1].keys() == want.keys()
        assert moved > 1e-3, (case, moved)  # the step really changed the weights: 100 × the tolerance
        worst, bad = _compare(got, want, per_process_bn=not sync_bn)
        measured[case] = worst
        if expect == "equal":
            assert not bad, (case, worst, bad[:5])
            assert r0["cases"][case]["loss"] == pytest.approx(out["loss"], abs=1e-5)  # the mean of the halves' losses
        else:  # the controls: the comparison does see a wrong BN or negatives without gradients
            assert worst > 100 * ATOL, (case, worst)
    print("max |2 processes - 1 process|:", {k: f"{v:.2e}" for k, v in measured.items()})

    # MoCo: both halves' keys enqueued, in the order of the global batch, and nothing else …
    for case in ("moco_v2", "moco_v2_sync_bn"):
        got = torch.load(out_dir / f"{case}_rank0.pt", weights_only=True)
        _, before, _, _ = _reference(case)
        assert int(got["queue.ptr"]) == E.BATCH
        assert not torch.allclose(got["queue.keys"][: E.BATCH], before["queue.keys"][: E.BATCH])
        assert torch.equal(got["queue.keys"][E.BATCH :], before["queue.keys"][E.BATCH :])
    # … the keys were shuffled by rank 0's permutation: another permutation gives other keys …
    other, _, _, _ = _reference("moco_v2", shuffle_seed=7)
    assert (
        _compare([torch.load(out_dir / f"moco_v2_rank{r}.pt", weights_only=True) for r in (0, 1)], other, True)[0]
        > 100 * ATOL
    )
    # … over several steps without DDP's buffer broadcast, the queue, its pointer and the key encoder stay equal on
    # both processes (each enqueues the all-gathered keys)
    for r in (r0, r1):
        assert r["moco_unequal_after_3_steps"] == [] and r["moco_queue_ptr_after_3_steps"] == 3 * E.BATCH % 32
    # … and each process's BN statistics are those of its own half (per-process BN, as the recipe has it)
    per_process = [torch.load(out_dir / f"moco_v2_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert not torch.allclose(
        per_process[0]["backbone.conv1.1.running_mean"], per_process[1]["backbone.conv1.1.running_mean"]
    )


def test_the_trainer_under_torchrun_reseeds_the_sampler_scales_lr_by_the_global_batch_refuses_odd_batches_and_stops_at_a_target(
    equivalence_run,
):
    _, r0, r1 = equivalence_run
    assert r0["steps"] == r1["steps"] == 2 * 64 // 16  # 2 epochs of 64 images, global batch 16
    for e in range(2):
        a, b = r0["epochs"][e], r1["epochs"][e]
        assert len(a) == len(b) == 32 and len(set(a)) == 32 and not set(a) & set(b)  # disjoint halves …
        assert sorted(a + b) == list(range(64))  # … of every image, once per epoch
    for r in (r0, r1):  # reseeded each epoch: another order, and another share of the images
        assert r["epochs"][0] != r["epochs"][1] and set(r["epochs"][0]) != set(r["epochs"][1])
    assert r0["first_lr"] == r1["first_lr"] == pytest.approx(0.32 * 16 / 256)  # the global batch, not 16 / 2
    for r in (r0, r1):
        assert (
            "global batch size 15" in r["odd_batch_error"]
            and "not divisible by the 2 processes" in r["odd_batch_error"]
        )
    # a speed run's stop is rank 0's decision (it alone runs the kNN monitor), taken by both processes
    assert r0["target"] == dict(steps=0, monitor_epochs=[0], reached=True)
    assert r1["target"] == dict(steps=0, monitor_epochs=[], reached=False)


def test_every_method_trains_under_torchrun_and_its_replicas_stay_equal(tmp_path, shapes_root):
    """Every registered method, at its tiny recipe, takes 2 DDP steps on 2 gloo processes through the trainer
    (each process on its half of a global batch of 16): no error (e.g. DDP's unused parameters), the weights
    moved, and both processes end with the same state (BN running statistics aside: per process by design)."""
    from sslbook.methods import REGISTRY

    # the methods sslbook ships (named by module path), not those other tests of this process register
    shipped = sorted(name for name, entry in REGISTRY.items() if isinstance(entry, str))
    _torchrun("dist_methods_worker.py", tmp_path, shapes_root)
    r0, r1 = (json.loads((tmp_path / f"methods_rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    for r in (r0, r1):
        assert sorted(r["errors"]) == shipped
        assert {m: e for m, e in r["errors"].items() if e} == {}
        assert set(r["steps"].values()) == {2}
    for name in shipped:
        assert r0["moved"][name] > 1e-4, name  # the steps changed the weights …
        a, b = r0["checksums"][name], r1["checksums"][name]
        assert a.keys() == b.keys()
        unequal = [k for k in a if a[k] != pytest.approx(b[k], rel=1e-6, abs=1e-6)]
        assert unequal == [], (name, unequal[:5])  # … in the same way on both processes

"""Full-scale speed machinery: the device data path, torch.compile, LARS on foreach ops, the bench command
and the peer comparison (CI-sized: tiny backbone, batch and step counts on the CPU; no speed is asserted)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from sslbook.benchmarks import hardware, peak_bf16_flops, random_dataset
from sslbook.config import resolve
from sslbook.data.device import DeviceBatches
from sslbook.data.indexed import WithIndex
from sslbook.optim import LARS
from sslbook.trainer import build_batches, choose_data_path, set_epoch, train

CPU = torch.device("cpu")


def _epochs(batches, epochs=2):
    out = []
    for epoch in range(epochs):
        set_epoch(batches, epoch)
        out.append([tuple(t.clone() for t in batch) for batch in batches])
    return out


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("with_index", [False, True])
def test_device_batches_equal_the_dataloader_path(world, with_index):
    # 203 images: not a multiple of the world size nor of the batch, so truncation and drop_last both matter
    data = random_dataset(203, image_size=8, seed=3)
    data = WithIndex(data) if with_index else data
    cfg = resolve("supervised", "tiny", batch_size=12 * world, seed=5)
    for rank in range(world):
        device_path = build_batches(cfg, data, CPU, rank, world, path="device")
        loader_path = build_batches(cfg, data, CPU, rank, world, path="loader")
        assert isinstance(device_path, DeviceBatches) and isinstance(loader_path, torch.utils.data.DataLoader)
        assert len(device_path) == len(loader_path) == (203 // world) // 12
        a, b = _epochs(device_path), _epochs(loader_path)
        assert len(a) == len(b) == 2 and a[0] and len(a[0]) == len(b[0])
        for epoch_a, epoch_b in zip(a, b):
            for batch_a, batch_b in zip(epoch_a, epoch_b):
                assert len(batch_a) == len(batch_b) == (3 if with_index else 2)
                for x, y in zip(batch_a, batch_b):
                    assert x.dtype == y.dtype and torch.equal(x, y)
        assert not torch.equal(a[0][0][0], a[1][0][0])  # a new epoch is shuffled anew
        if torch.cuda.is_available():  # on a GPU machine: the images on the GPU, the same batches
            on_gpu = _epochs(build_batches(cfg, data, torch.device("cuda"), rank, world, path="device"))
            assert all(
                torch.equal(x.cpu(), y) for ea, eb in zip(on_gpu, b) for ba, bb in zip(ea, eb) for x, y in zip(ba, bb)
            )
    if world == 2:  # the two processes see disjoint images
        first = [build_batches(cfg, WithIndex(random_dataset(203, 8, 3)), CPU, r, 2, path="device") for r in (0, 1)]
        seen = [torch.cat([b[2] for b in batches]) for batches in first]
        assert not set(seen[0].tolist()) & set(seen[1].tolist())


def _params(module):
    return torch.cat([p.detach().flatten() for p in module.state_dict().values() if p.is_floating_point()])


@pytest.mark.parametrize("method", ["simclr", "instdisc"])
def test_training_on_either_data_path_gives_the_same_weights(small, method, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # on a GPU machine: bitwise-repeatable kernels
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    kw = dict(small, epochs=2, batch_size=32, eval_protocols=("knn",))
    extra = (
        dict(method_kwargs=dict(bank_size=256, num_negatives=64)) if method == "instdisc" else {}
    )  # a method with indices
    on_device = train(method, data_on="device", **kw, **extra)
    on_loader = train(method, data_on="loader", **kw, **extra)
    assert on_device.steps == on_loader.steps == 2 * (256 // 32)
    assert [h["loss"] for h in on_device.history] == [h["loss"] for h in on_loader.history]
    assert torch.equal(_params(on_device.method), _params(on_loader.method))


def test_data_on_choices_and_errors(small):
    data = random_dataset(64, image_size=8)
    cfg = resolve("supervised", "tiny", batch_size=16)
    assert choose_data_path(cfg, data, CPU) == "loader"  # auto: the device path only on CUDA
    assert choose_data_path(resolve("supervised", "tiny", data_on="device"), WithIndex(data), CPU) == "device"
    with pytest.raises(ValueError, match=r"data_on \(--data-on\) must be one of auto, device, loader"):
        choose_data_path(resolve("supervised", "tiny", data_on="gpu"), data, CPU)
    with pytest.raises(ValueError, match="needs augment_on='device'"):
        choose_data_path(resolve("supervised", "tiny", data_on="device", augment_on="loader"), data, CPU)

    class Files(torch.utils.data.Dataset):  # a data set read from files: no tensor to put on the device
        def __len__(self):
            return 64

    with pytest.raises(ValueError, match="held in memory"):
        choose_data_path(resolve("supervised", "tiny", data_on="device"), Files(), CPU)
    with pytest.raises(ValueError, match="data_on .*must be"):
        train("supervised", data_on="sometimes", **small)
    with pytest.raises(ValueError, match="rank must be in"):
        DeviceBatches(data.images, data.labels, 8, rank=2, world=2)


@torch.no_grad()
def _reference_lars_step(opt):
    """The per-parameter LARS formula (the loop LARS.step replaced), one parameter at a time."""
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
            if not group["lars_exclude"]:
                w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                trust = torch.where(
                    (w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm, torch.ones_like(w_norm)
                )
                d.mul_(trust)
            buf = opt.state[p].get("momentum_buffer")
            if buf is None:
                buf = opt.state[p]["momentum_buffer"] = d
            else:
                buf.mul_(group["momentum"]).add_(d)
            p.add_(buf, alpha=-group["lr"])


def test_lars_foreach_step_equals_the_per_parameter_formula():
    g = torch.Generator().manual_seed(0)
    shapes = [(16, 8), (8, 3, 3, 3), (5,), (7, 4)]

    def make():
        params = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
        params[3].data.zero_()  # ‖w‖ = 0: the trust ratio falls back to 1
        return params

    a = make()
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    unused = torch.nn.Parameter(torch.randn(3, generator=g))  # never gets a gradient: left alone

    def groups(ps, extra):
        return [
            dict(params=[ps[0], ps[1], ps[3]], weight_decay=1e-2, lars_exclude=False),
            dict(params=[ps[2], extra], weight_decay=0.0, lars_exclude=True),
        ]

    opt_a = LARS(groups(a, unused), lr=0.3, momentum=0.9)
    ref_unused = torch.nn.Parameter(unused.detach().clone())
    opt_b = LARS(groups(b, ref_unused), lr=0.3, momentum=0.9)
    for _ in range(3):
        grads = [torch.randn(*s, generator=g) for s in shapes]
        for p, q, gr in zip(a, b, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt_a.step()
        _reference_lars_step(opt_b)
    for p, q in zip(a, b):
        assert not torch.equal(p, torch.zeros_like(p))
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(
            opt_a.state[p]["momentum_buffer"], opt_b.state[q]["momentum_buffer"], rtol=1e-6, atol=1e-7
        )
    assert torch.equal(unused, ref_unused) and unused not in opt_a.state
    assert a[3].abs().sum() > 0  # the zero weight moved by a plain (trust 1) step


def test_compile_gives_the_eager_losses(small, monkeypatch):
    import sslbook.trainer as trainer

    monkeypatch.setattr(trainer, "COMPILE_BACKEND", "aot_eager")  # dynamo + AOT autograd without code generation
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    kw = dict(small, batch_size=32, max_steps=3, eval_protocols=("knn",))
    eager = train("byol", **kw)
    compiled = train("byol", compile=True, **kw)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert frames > 0  # the sub-networks really went through torch.compile
    for name in ("backbone", "projector", "predictor", "target_backbone", "target_projector"):
        assert getattr(compiled.method, name)._compiled_call_impl is not None
    assert eager.method.backbone._compiled_call_impl is None
    # same state_dict keys (checkpoints do not change) and the same losses to a tolerance
    assert list(compiled.method.state_dict()) == list(eager.method.state_dict())
    losses = [(h["loss"], c["loss"]) for h, c in zip(eager.history, compiled.history)]
    assert len(losses) == 3 and all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5) for a, b in losses)


def test_peak_flops_table():
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H200") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("NVIDIA L4") == 121e12 and peak_bf16_flops("NVIDIA L40S") == 362e12
    assert peak_bf16_flops("NVIDIA A10") == 125e12
    assert peak_bf16_flops("Tesla V100-SXM2-16GB") is None and peak_bf16_flops(None) is None


def _finite_positive(*xs):
    return all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in xs)


def test_cli_bench_prints_a_table_and_a_json_line(capsys):
    from sslbook.cli import main

    assert (
        main(
            [
                "bench",
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
        )
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    r = json.loads(out[-1])
    table = "\n".join(out[:-1])
    assert hardware() in table and "images / s" in table and "MFU" in table
    assert r["method"] == "simclr" and r["steps"] == 2 and r["batch_size"] == 32
    assert _finite_positive(
        r["images_per_s"], r["seconds_per_epoch"], r["flops_per_step"], r["achieved_tflops"], r["step_ms"]
    )
    assert r["seconds_per_epoch"] == pytest.approx(50000 / r["images_per_s"])
    if torch.cuda.is_available():  # auto: 96 small images fit on the GPU; bf16 autocast; memory measured
        assert r["data_path"] == "device" and r["amp"] and _finite_positive(r["peak_memory_gib"])
        assert r["mfu"] is None or 0 < r["mfu"] < 1
    else:  # the CPU: the DataLoader, no peak to compare with, no GPU memory
        assert r["data_path"] == "loader" and r["mfu"] is None and r["peak_memory_gib"] is None
        assert "n/a" in table
    assert math.isfinite(r["final_loss"])


def test_bench_times_the_speedrun_recipe(capsys):
    """The speed run's clock is the training step of its recipe (LARS, its batch, CIFAR-shaped images): bench
    measures it on random images of that shape; a CPU-sized form here, the GPU figure in gpu_check.sh."""
    from sslbook.cli import main

    assert (
        main(
            [
                "bench",
                "simclr",
                "--preset",
                "speedrun",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--backbone",
                "convnet_small",
                "--data",
                "random",
                "--images",
                "64",
                "--batch-size",
                "16",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (r["preset"], r["image_size"], r["batch_size"], r["data"]) == ("speedrun", 32, 16, "random")
    assert _finite_positive(r["images_per_s"], r["seconds_per_epoch"])
    assert main(["bench", "rotnet", "--preset", "speedrun", "--steps", "1"]) == 2  # no speedrun recipe: a clear error


def test_bench_on_the_device_path_counts_the_flops_of_a_step():
    from sslbook.benchmarks import bench

    r = bench(
        "supervised",
        "tiny",
        steps=1,
        warmup=0,
        batch_size=16,
        backbone="convnet_small",
        data="random",
        images=32,
        data_on="device",
        verbose=False,
    )
    assert r["data_path"] == "device" and _finite_positive(r["images_per_s"], r["flops_per_step"])
    # a linear classifier on 128 features for 10 classes, batch 16: 2·16·128·10 FLOPs forward, twice that
    # backward (gradients of its input and its weight); the convolutions make up the rest
    assert r["flops_per_step"] > 3 * 2 * 16 * 128 * 10
    with pytest.raises(ValueError, match="steps >= 1"):
        bench("supervised", "tiny", steps=0, data="random", images=32, verbose=False)


def _peer_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_lightly.py"
    spec = importlib.util.spec_from_file_location("peer_lightly", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peer_comparison_runs_both_pipelines(capsys):
    peer = _peer_module()
    r = peer.main(
        [
            "--method",
            "simclr",
            "--backbone",
            "convnet_small",
            "--batch-size",
            "16",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--data",
            "random",
            "--images",
            "48",
            "--workers",
            "0",
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["rows"][0]["method"] == "simclr"
    assert hardware() in "\n".join(out) and "random uint8 images" in "\n".join(out)
    (row,) = r["rows"]
    assert r["peer"].startswith("lightly ")
    assert _finite_positive(row["sslbook_images_per_s"], row["peer_images_per_s"], row["ratio"])
    assert row["ratio"] == pytest.approx(row["sslbook_images_per_s"] / row["peer_images_per_s"])
    assert math.isfinite(row["peer"]["final_loss"]) and math.isfinite(row["sslbook"]["final_loss"])


def test_the_package_never_imports_the_peer_library():
    package = Path(__file__).resolve().parents[1] / "sslbook"
    files = list(package.rglob("*.py"))
    assert len(files) > 20
    offenders = [
        str(f)
        for f in files
        if any(line.strip().startswith(("import lightly", "from lightly")) for line in f.read_text().splitlines())
    ]
    assert offenders == []


def test_cli_train_takes_the_speed_options(monkeypatch):
    import sslbook.trainer as trainer
    from sslbook.cli import _parser, main

    args = _parser().parse_args(["train", "simclr", "--compile", "--data-on", "device"])
    assert args.compile is True and args.data_on == "device"
    plain = _parser().parse_args(["train", "simclr"])
    assert plain.compile is None and plain.data_on is None  # absent: the recipe's values stay
    seen = {}

    def fake_run(cfg, callbacks=()):
        seen["cfg"] = cfg
        raise ValueError("stop here")

    monkeypatch.setattr(trainer, "run", fake_run)
    assert main(["train", "simclr", "--compile", "--data-on", "loader"]) == 2  # the ValueError, reported cleanly
    assert seen["cfg"].compile is True and seen["cfg"].data_on == "loader"
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "simclr", "--data-on", "gpu"])


def test_the_speed_run_trains_end_to_end_on_noise_of_cifars_shape(tmp_path, capsys):
    """``--data random`` lets the speed run's whole loop (views, LARS, the kNN monitor and its target) run where
    CIFAR-10 is missing: the per-epoch time is real, the accuracy is chance and the target is not reached."""
    from sslbook.data import load_dataset
    from sslbook.trainer import train

    tr, te = load_dataset("random", "train", n_train=40), load_dataset("random", "test", n_test=20)
    assert (len(tr), len(te), tr[0][0].shape, tr[0][0].dtype) == (40, 20, (3, 32, 32), torch.uint8)
    assert not torch.equal(tr[0][0], te[0][0])  # other images for the test split
    run = train(
        "simclr",
        "speedrun",
        data="random",
        data_kwargs=dict(n_train=64, n_test=32),
        backbone="convnet_small",
        batch_size=16,
        epochs=2,
        num_workers=0,
        progress=False,
        out=str(tmp_path),
    )
    assert run.config.target_knn == 0.9 and run.target_reached is None  # noise: nothing to find
    assert [m["epoch"] for m in run.monitor] == [0, 2]  # every 10 epochs, and after the last
    assert run.steps == 2 * 64 // 16 and run.train_seconds > 0
    assert set(run.metrics) == {"knn_top1"}  # the speed run's protocol: kNN only

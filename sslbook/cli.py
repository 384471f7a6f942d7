"""Command line: ``python -m sslbook {list,train,eval,reference,bench,compare}``.

    python -m sslbook list
    python -m sslbook train METHOD [--data NAME|folder:PATH] [--preset tiny|long|full|speedrun] [--epochs N]
                                   [--batch-size B] [--max-steps N] [--out DIR] [--resume] [--compile]
                                   [--data-on auto|device|loader] [--target-knn F] [--bn-refresh]
    python -m sslbook eval CHECKPOINT [--data NAME] [--protocol knn|linear|kmeans|finetune|segmentation|detection|transfer]
                                      [--bn-refresh]
    python -m sslbook reference [METHOD ...] [--list]
    python -m sslbook compare METHOD [METHOD ...] [--preset P] [--seeds N] [--json] [--test welch|paired] [--epochs N] [--data NAME]
                                   [--bootstrap B] [--option KEY=VALUE] [--set KEY=VALUE]
    python -m sslbook bench METHOD [--preset P] [--steps N] [--batch-size B] [--backbone NAME]
                                   [--data NAME|random] [--warmup W] [--compile] [--data-on auto|device|loader]

``train`` prints, as its last line, one JSON object with the method, epochs, the training seconds and the
metrics (``knn_top1``, ``linear_top1``: fractions in [0, 1]); with a kNN target (``--target-knn``, the
``speedrun`` preset) also ``target_reached``: the monitor entry (epoch, training seconds, kNN) at which the
run reached it, or null. ``--epochs 0`` evaluates the untrained backbone,
the random-init baseline; with ``--bn-refresh`` too, that baseline with BatchNorm's running statistics
measured on the training images (the JSON line then says ``bn_refresh`` and how many ``bn_layers``). Under ``torchrun --nproc_per_node=K`` the same command trains with DDP:
``--batch-size B`` is the global batch (B/K images per process, B a multiple of K) and the learning rate
is ``--lr`` × B / 256 whatever K is.
``bench`` prints a table of the training step's speed (images/s, seconds per 50,000-image epoch, peak GPU
memory, FLOPs, MFU) with the hardware, and as its last line one JSON object with every figure.
``compare`` trains (or loads) every method over N seeds and both random-init controls, and prints a table of
means ± std over seeds, the gains over the stronger control, one-sided p-values (Welch's test, or with
``--test paired`` the t-test on the per-seed differences) and the test set's bootstrap noise; with ``--json``
one JSON object per method instead.
"""

from __future__ import annotations

import argparse
import json
import sys

from sslbook.checkpoint import CheckpointError
from sslbook.config import ConfigError
from sslbook.data.base import DataError
from sslbook.trainer import RunInterrupted


def _parser() -> argparse.ArgumentParser:
    from sslbook.config import PRESETS
    from sslbook.methods import list_methods

    p = argparse.ArgumentParser(prog="python -m sslbook", description="Self-supervised learning, from scratch.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the available methods, one name a line")

    t = sub.add_parser("train", help="train a method, evaluate it, print a JSON line of metrics")
    t.add_argument("method", help=f"one of: {', '.join(list_methods())}")
    t.add_argument(
        "--data",
        help="shapes (default at tiny), cifar10, cifar100, stl10, imagenet, folder:PATH, or random "
        "(noise of CIFAR-10's shape: to time a recipe where its data is missing)",
    )
    t.add_argument("--download", action="store_true", help="let torchvision fetch CIFAR/STL-10 into the data folder")
    t.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="tiny (CPU, minutes), full (paper scale) or speedrun (CIFAR-10 to a kNN target against the clock); "
        "default $SSLBOOK_PRESET or tiny",
    )
    t.add_argument("--epochs", type=int)
    t.add_argument(
        "--batch-size",
        type=int,
        help="the global batch B of one step over all processes: under torchrun --nproc_per_node=K each "
        "process takes B/K images (B must be a multiple of K)",
    )
    t.add_argument(
        "--lr",
        type=float,
        dest="base_lr",
        help="base learning rate for a batch of 256: the run uses lr = base_lr x B / 256 with the global B",
    )
    t.add_argument("--backbone")
    t.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    t.add_argument("--workers", type=int, dest="num_workers")
    t.add_argument("--seed", type=int)
    t.add_argument("--grad-clip", type=float)
    t.add_argument(
        "--label-fraction",
        type=float,
        dest="label_fraction",
        help="semi-supervised: a method that trains on labels sees those of this class-balanced fraction of the "
        "training images only (fixed by the fraction and --seed), the others as unlabelled",
    )
    t.add_argument(
        "--out",
        help="checkpoint folder (last.pt is written atomically every epoch); refused if another "
        "run is training there or if it holds a run and neither --resume nor --overwrite is given",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt (a resume may change how long the "
        "run trains and how it is evaluated, nothing else)",
    )
    t.add_argument(
        "--overwrite", action="store_true", default=None, help="start afresh in an OUT that holds a run, replacing it"
    )
    t.add_argument(
        "--checkpoint-every",
        type=int,
        dest="checkpoint_every",
        help="also checkpoint every N optimiser steps inside an epoch (for long epochs)",
    )
    t.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    t.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile the backbone, heads and momentum copies"
    )
    t.add_argument(
        "--data-on",
        choices=["auto", "device", "loader"],
        help="batches drawn on the device from images held there, or by a DataLoader (default auto)",
    )
    t.add_argument(
        "--target-knn",
        type=float,
        dest="target_knn",
        help="stop once the kNN monitor reads this top-1 (a fraction; needs the monitor, on at every preset)",
    )
    t.add_argument(
        "--bn-refresh",
        action="store_true",
        default=None,
        dest="bn_refresh",
        help="with --epochs 0: the random-init control with BatchNorm's running statistics measured on the "
        "training images (no weight changes)",
    )
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method argument, e.g. --set temperature=0.2 (value parsed as JSON when it can be)",
    )

    b = sub.add_parser("bench", help="images/s, FLOPs and memory of a method's training step; a JSON line last")
    b.add_argument("method", help=f"one of: {', '.join(list_methods())}")
    b.add_argument("--preset", choices=sorted(PRESETS), help="default $SSLBOOK_PRESET or tiny")
    b.add_argument("--steps", type=int, default=50, help="timed steps (default 50)")
    b.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    b.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    b.add_argument("--backbone")
    b.add_argument("--data", help="a data set name as for train, or random: random uint8 images of the image size")
    b.add_argument("--images", type=int, default=50000, help="--data random: how many images (default 50000, CIFAR's)")
    b.add_argument("--compile", action="store_true", help="torch.compile the backbone, heads and momentum copies")
    b.add_argument("--data-on", choices=["auto", "device", "loader"])
    b.add_argument("--workers", type=int, dest="num_workers", help="DataLoader workers on the loader path")

    c = sub.add_parser(
        "compare",
        help="methods over several seeds against their random-init floors: mean ± std, gains, one-sided p-values",
    )
    c.add_argument("methods", nargs="+", metavar="METHOD", help=f"one or more of: {', '.join(list_methods())}")
    c.add_argument("--preset", choices=sorted(PRESETS), help="default $SSLBOOK_PRESET or tiny")
    c.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every run (default 3)")
    c.add_argument("--json", action="store_true", help="one JSON line per method instead of the table")
    c.add_argument(
        "--test",
        choices=("welch", "paired"),
        default="welch",
        help="welch (default): the seeds' runs and floors as independent samples; paired: the per-seed differences",
    )
    c.add_argument("--data")
    c.add_argument("--epochs", type=int, help="the methods' epochs (the random-init controls train none)")
    c.add_argument("--max-steps", type=int, dest="max_steps")
    c.add_argument("--batch-size", type=int, dest="batch_size")
    c.add_argument("--backbone")
    c.add_argument("--workers", type=int, dest="num_workers")
    c.add_argument(
        "--bootstrap",
        type=int,
        default=None,
        dest="eval_bootstrap",
        help="test-set resamples for the evaluation's own noise (default 1000)",
    )
    c.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any training option, e.g. --option linear_epochs=20 --option 'data_kwargs={\"n_train\": 500}'",
    )
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a method argument, as for train")
    c.add_argument("--no-progress", dest="progress", action="store_false", default=True)

    r = sub.add_parser(
        "reference",
        help="train the long reference runs (resumable) and store them in reference/long/ for the chapters",
    )
    r.add_argument("methods", nargs="*", metavar="METHOD", help="default: every method")
    r.add_argument("--store", help="where to store them (default $SSLBOOK_REFERENCE or the repository's reference/)")
    r.add_argument("--list", action="store_true", help="list the stored runs and whether each matches its recipe")
    r.add_argument("--no-progress", dest="progress", action="store_false", default=True)

    e = sub.add_parser("eval", help="evaluate a checkpoint's backbone")
    e.add_argument("checkpoint")
    e.add_argument("--data", help="evaluate on another data set than the one trained on")
    e.add_argument("--download", action="store_true")
    e.add_argument(
        "--protocol",
        choices=["knn", "linear", "kmeans", "finetune", "segmentation", "detection", "transfer"],
        default="knn",
        help="segmentation / detection: sslbook.dense's frozen probes on the data's masks "
        "(shapes or tabletop); transfer: kNN and linear on --data (default tabletop)",
    )
    e.add_argument("--label-fraction", type=float, default=0.1, help="finetune: fraction of labels used")
    e.add_argument("--epochs", type=int, default=None, help="finetune / linear epochs")
    e.add_argument(
        "--bn-refresh",
        action="store_true",
        help="first measure BatchNorm's running statistics on the training images (weights unchanged)",
    )
    return p


def _parse_set(items: list[str], flag: str = "--set") -> dict:
    """``KEY=VALUE`` pairs: the value as JSON when it parses (numbers, true/false, lists), as a number when
    Python reads one (``nan``, ``inf``: refused by the config's validation), else as a string."""
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            from sslbook.methods import list_methods

            print("\n".join(list_methods()))
            return 0
        if args.command == "train":
            return _train(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "reference":
            return _reference(args)
        return _eval(args)
    except (DataError, CheckpointError, ValueError, FloatingPointError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except RunInterrupted as e:  # SIGINT / SIGTERM during training: the checkpoint was saved first
        print(_one_line(e), file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    return " ".join(str(e.args[0] if e.args else e).split("\n"))


def _train(args) -> int:
    from sslbook import distributed as dist
    from sslbook.config import resolve
    from sslbook.trainer import run

    overrides = {
        k: getattr(args, k)
        for k in (
            "data",
            "epochs",
            "batch_size",
            "base_lr",
            "backbone",
            "max_steps",
            "num_workers",
            "seed",
            "grad_clip",
            "out",
            "progress",
            "compile",
            "data_on",
            "target_knn",
            "overwrite",
            "checkpoint_every",
            "bn_refresh",
            "label_fraction",
        )
    }
    cfg = resolve(args.method, args.preset, resume=args.resume or None, method_kwargs=_parse_set(args.set), **overrides)
    if args.download:
        from sslbook.data import load_dataset

        if dist.is_main():
            load_dataset(cfg.data, "train", download=True, image_size=cfg.image_size, **cfg.data_kwargs)
            load_dataset(cfg.data, "test", download=True, image_size=cfg.image_size, **cfg.data_kwargs)
    result = run(cfg)
    if dist.is_main():
        print(
            json.dumps(
                {
                    "method": cfg.method,
                    "preset": cfg.preset,
                    "data": cfg.data,
                    "backbone": cfg.backbone,
                    "epochs": cfg.epochs,
                    **({"label_fraction": cfg.label_fraction} if cfg.label_fraction is not None else {}),
                    "steps": len(result.history) and result.history[-1]["step"],
                    "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                    "train_seconds": round(result.train_seconds, 2),
                    **_bn_report(cfg.bn_refresh, result.backbone),
                    **result.metrics,
                    **(
                        {
                            "target_knn": cfg.target_knn,
                            "target_reached": result.target_reached,
                            "knn_checks": len(result.monitor),
                            "knn_check_seconds": round(sum(m.get("eval_seconds", 0.0) for m in result.monitor), 2),
                        }
                        if cfg.target_knn is not None
                        else {}
                    ),
                }
            )
        )
    dist.cleanup()
    return 0


def _bn_report(refreshed: bool, backbone) -> dict:
    """The JSON line's account of a BatchNorm refresh: how many layers had their statistics measured."""
    if not refreshed:
        return {}
    from sslbook.evaluation import batchnorm_layers

    return {"bn_refresh": True, "bn_layers": len(batchnorm_layers(backbone))}  # 0: evaluated unchanged


def _compare(args) -> int:
    from sslbook.comparison import compare, format_table

    overrides = _parse_set(args.option, "--option")
    for k in ("data", "epochs", "max_steps", "batch_size", "backbone", "num_workers", "eval_bootstrap"):
        if getattr(args, k) is not None:
            overrides[k] = getattr(args, k)
    if args.set:
        overrides["method_kwargs"] = {**overrides.get("method_kwargs", {}), **_parse_set(args.set)}
    rows = compare(args.methods, args.preset, seeds=args.seeds, progress=args.progress, test=args.test, **overrides)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows))
    return 0


def _bench(args) -> int:
    from sslbook import distributed as dist
    from sslbook.benchmarks import bench

    result = bench(
        args.method,
        args.preset,
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size,
        backbone=args.backbone,
        data=args.data,
        compile=args.compile,
        data_on=args.data_on,
        images=args.images,
        num_workers=args.num_workers,
    )
    if dist.is_main():
        print(json.dumps(result))
    dist.cleanup()
    return 0


def _reference(args) -> int:
    from sslbook import reference

    if args.list:
        for m in reference.available(args.store):
            run = reference.load(m, args.store)
            differs = run.recipe_differences()
            p = run.provenance
            state = "matches its recipe" if not differs else f"differs from its recipe in {', '.join(differs)}"
            print(
                f"{m}: {run.config.epochs} epochs, {p['train_seconds']:.0f} s on {p['hardware']}, "
                f"commit {p['git_commit']}, {state}"
            )
        return 0
    command = "python -m sslbook reference" + "".join(f" {m}" for m in args.methods)
    reference.make(args.methods or None, args.store, progress=args.progress, command=command)
    return 0


def _eval(args) -> int:
    from dataclasses import replace

    from sslbook import evaluation
    from sslbook.trainer import eval_sets, load_trained

    trained = load_trained(args.checkpoint)
    cfg = trained.config
    if args.protocol in ("segmentation", "detection", "transfer"):
        if args.bn_refresh:
            raise ValueError("--bn-refresh applies to the knn, linear, kmeans and finetune protocols")
        return _eval_dense(args, trained)
    if args.data and args.data != cfg.data:
        cfg = replace(cfg, data=args.data, data_kwargs={})
    if args.download:  # before eval_sets, which would stop at the missing files
        from sslbook.data import load_dataset

        load_dataset(cfg.data, "train", download=True, image_size=cfg.image_size, **cfg.data_kwargs)
        load_dataset(cfg.data, "test", download=True, image_size=cfg.image_size, **cfg.data_kwargs)
    train_set, test_set = eval_sets(cfg)
    backbone = trained.backbone
    out = {"checkpoint": args.checkpoint, "method": cfg.method, "data": cfg.data, "protocol": args.protocol}
    if args.bn_refresh:
        evaluation.refresh_bn_statistics(backbone, train_set, batch_size=cfg.eval_batch_size)
    out.update(_bn_report(args.bn_refresh, backbone))
    if args.protocol == "finetune":
        kw = {"epochs": args.epochs} if args.epochs else {}
        res = evaluation.finetune(
            backbone, train_set, test_set, label_fraction=args.label_fraction, progress=True, **kw
        )
        out.update(label_fraction=args.label_fraction, finetune_top1=float(res["top1"]))
    else:
        if args.epochs:
            cfg = replace(cfg, linear_epochs=args.epochs)
        from sslbook.trainer import evaluate_backbone

        out.update(
            evaluate_backbone(
                backbone, cfg, protocols=(args.protocol,), train_set=train_set, test_set=test_set, progress=True
            )
        )
    print(json.dumps(out))
    return 0


def _eval_dense(args, trained) -> int:
    """``eval --protocol segmentation|detection|transfer``: sslbook.dense on the checkpoint's backbone."""
    from dataclasses import replace

    from sslbook import dense
    from sslbook.trainer import eval_sets

    cfg = trained.config
    out = {"checkpoint": args.checkpoint, "method": cfg.method, "protocol": args.protocol}
    if args.protocol == "transfer":
        target = replace(cfg, data=args.data or "tabletop", data_kwargs={})
        train_set, test_set = eval_sets(target)
        kw = {"linear_epochs": args.epochs} if args.epochs else {}
        out.update(data=target.data, **dense.transfer(trained.backbone, train_set, test_set, k=cfg.knn_k, **kw))
    else:
        target = replace(cfg, data=args.data, data_kwargs={}) if args.data and args.data != cfg.data else cfg
        kwargs = dict(image_size=target.image_size, **target.data_kwargs)
        if target.data in ("shapes", "tabletop"):  # the generated sets know their masks; any other is refused by dense
            kwargs["masks"] = True
        from sslbook.data import load_dataset

        train_set = load_dataset(target.data, "train", **kwargs)
        test_set = load_dataset(target.data, "test", **kwargs)
        kw = {"epochs": args.epochs} if args.epochs else {}
        if args.protocol == "segmentation":
            r = dense.dense_probe(trained.backbone, train_set, test_set, **kw)
            out.update(data=target.data, miou=r["miou"], pixel_acc=r["pixel_acc"])
        else:
            r = dense.detection_probe(trained.backbone, train_set, test_set, **kw)
            out.update(data=target.data, **{k: r[k] for k in ("box_iou", "acc_iou50", "class_acc", "det_acc")})
    print(json.dumps(out))
    return 0

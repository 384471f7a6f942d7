"""Long reference runs: every method trained at the ``long`` preset, stored compactly, loaded by the chapters.

A chapter at the tiny preset trains each method for a few CPU-minutes. The ``long`` preset
(:data:`sslbook.config.LONG_FACTOR` × the tiny epochs, the same data, backbone and recipe) shows what the same
recipe reaches when it trains longer; those runs take CPU-hours, so they are made once::

    python -m sslbook reference [METHOD ...]      # every method when none is named; resumable

which trains each run into ``runs/long/<method>`` (checkpointed every epoch: an interrupted command resumes
where it stopped), then stores it in ``reference/long/<method>/`` of the repository:

- ``backbone.pt``: the backbone's weights in half precision (loaded with ``weights_only=True``);
- ``run.json``: the config, the learning curve (the trainer's kNN monitor, on its fixed subsets, every few
  epochs), the final kNN and linear-probe top-1 *of the stored half-precision weights*, and the provenance:
  the command, the sslbook version, the git commit, the hardware, the torch version and the training time.

:func:`load` gives the backbone back in float32; a chapter evaluates it itself, so every number it shows
from a stored run is computed in the notebook from the weights.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sslbook import checkpoint
from sslbook._version import __version__
from sslbook.config import TrainConfig, plain, resolve, run_dir
from sslbook.data.base import DataInfo

REFERENCE_ENV = "SSLBOOK_REFERENCE"
PRESET = "long"
_REPO = Path(__file__).resolve().parents[1]
# the settings a stored run must share with today's recipe to stand for it (how it is evaluated, where it was
# written and how it was shown may differ)
_NOT_RECIPE = {"out", "resume", "overwrite", "progress", "log_every", "checkpoint_every", "num_workers", "data_on"}


class ReferenceError(ValueError):
    """A stored run that is missing, damaged or no longer the method's recipe; the message says what to do."""


def root(path: str | os.PathLike | None = None) -> Path:
    """The folder of stored runs: ``path``, else ``$SSLBOOK_REFERENCE``, else the repository's ``reference/``."""
    if path is not None:
        return Path(path)
    if os.environ.get(REFERENCE_ENV):
        return Path(os.environ[REFERENCE_ENV])
    return _REPO / "reference"


def folder(method: str, where: str | os.PathLike | None = None) -> Path:
    return root(where) / PRESET / method


def available(where: str | os.PathLike | None = None) -> list[str]:
    """The methods with a stored long run, sorted."""
    base = root(where) / PRESET
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "run.json").is_file() and (p / "backbone.pt").is_file())


@dataclass
class StoredRun:
    """One stored long run. ``backbone`` is float32, in eval mode, on the CPU."""

    method: str
    config: TrainConfig
    backbone: torch.nn.Module
    curve: list[dict]  # the trainer's monitor: {"epoch", "step", "images", "train_seconds", "knn_top1", ...}
    metrics: dict  # kNN / linear top-1 of the stored (half-precision) weights, measured when it was stored
    provenance: dict  # command, sslbook_version, git_commit, hardware, torch_version, train_seconds, stored_at
    info: DataInfo  # the data set it trained on, as the checkpoint recorded it
    folder: Path = field(default_factory=Path)

    def recipe_differences(self) -> dict:
        """``{setting: [stored, today's recipe]}`` for the settings that define the run; {} when it is current."""
        return recipe_differences(self.config)


def recipe_differences(cfg: TrainConfig) -> dict:
    stored = plain(cfg.to_dict())
    today = plain(resolve(cfg.method, PRESET, seed=cfg.seed).to_dict())
    return {k: [stored.get(k), today[k]] for k in today if k not in _NOT_RECIPE and stored.get(k) != today[k]}


def _half(state: dict) -> dict:
    return {
        k: (v.detach().to("cpu").half() if v.is_floating_point() else v.detach().to("cpu")) for k, v in state.items()
    }


def _build_backbone(cfg: TrainConfig, info: DataInfo) -> torch.nn.Module:
    """The method's backbone (a two-half network for split-brain, say), built as the trainer builds it."""
    from sslbook.trainer import build_method

    rng = torch.get_rng_state()  # building seeds torch; a load leaves the caller's random numbers as they were
    try:
        return build_method(cfg, info).backbone
    finally:
        torch.set_rng_state(rng)


def load(method: str, where: str | os.PathLike | None = None) -> StoredRun:
    """The stored long run of ``method`` (``weights_only=True``: loading runs no code)."""
    f = folder(method, where)
    if not (f / "run.json").is_file() or not (f / "backbone.pt").is_file():
        have = available(where)
        raise ReferenceError(
            f"no stored long run of {method} in {f}; make it with `python -m sslbook reference {method}`"
            + (f" (stored: {', '.join(have)})" if have else "")
        )
    try:
        record = json.loads((f / "run.json").read_text())
        state = torch.load(f / "backbone.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise ReferenceError(f"cannot read the stored run in {f}: {type(e).__name__}: {e}; make it again") from e
    cfg, info = TrainConfig.from_dict(record["config"]), DataInfo.from_dict(record["info"])
    backbone = _build_backbone(cfg, info)
    backbone.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return StoredRun(
        method,
        cfg,
        backbone.eval(),
        list(record["curve"]),
        dict(record["metrics"]),
        dict(record["provenance"]),
        info,
        f,
    )


def initial_backbone(run: StoredRun) -> torch.nn.Module:
    """The weights the run started from: its architecture at random initialisation with its seed (the trainer
    seeds before it builds the backbone), float32, eval mode. Its evaluation is the run's own floor."""
    return _build_backbone(run.config, run.info).eval()


def evaluate(run: StoredRun, protocols=("knn", "linear"), progress: bool = False) -> dict:
    """The stored backbone evaluated as the trainer evaluates (the run's own k, temperature, probe epochs)."""
    return _evaluate(run.backbone, run.config, protocols, progress)


def _evaluate(backbone: torch.nn.Module, cfg: TrainConfig, protocols=("knn", "linear"), progress=False) -> dict:
    from sslbook.trainer import evaluate_backbone

    out = evaluate_backbone(backbone, cfg, protocols=protocols, progress=progress)
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}


def git_commit() -> str:
    """The checkout's commit (12 hex digits), with ``-dirty`` when the package's code differs from it
    (uncommitted changes elsewhere, in the chapters say, do not change what trained); "unknown" outside git."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        changed = git("status", "--porcelain", "--", "sslbook", "pyproject.toml")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if changed.returncode != 0 or changed.stdout.strip() else "")


def store(result, info: DataInfo, where: str | os.PathLike | None = None, command: str | None = None) -> Path:
    """Write a finished long run (a :class:`sslbook.trainer.TrainResult`) to ``reference/long/<method>/``.

    The metrics stored are those of the half-precision weights, evaluated here, so that :func:`load` followed
    by :func:`evaluate` gives them back."""
    from sslbook.benchmarks import hardware

    cfg = result.config
    if cfg.preset != PRESET:
        raise ReferenceError(f"only runs at the {PRESET!r} preset are stored; this one is at {cfg.preset!r}")
    f = folder(cfg.method, where)
    f.mkdir(parents=True, exist_ok=True)
    half = _half(result.backbone.state_dict())
    backbone = _build_backbone(cfg, info)
    backbone.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    metrics = _evaluate(backbone.eval(), cfg)
    record = {
        "method": cfg.method,
        "config": cfg.to_dict(),
        "info": info.to_dict(),
        "curve": result.monitor,
        "metrics": metrics,
        "provenance": {
            "command": command or f"python -m sslbook reference {cfg.method}",
            "sslbook_version": __version__,
            "git_commit": git_commit(),
            "hardware": hardware(),
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "train_seconds": round(float(result.train_seconds), 1),
            "steps": int(result.steps),
            "stored_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    checkpoint.save_atomic(half, f / "backbone.pt")
    text = json.dumps(record, indent=1, default=plain) + "\n"
    checkpoint.write_atomic(f / "run.json", lambda fh: fh.write(text.encode()))
    return f


def make(
    methods=None, where: str | os.PathLike | None = None, progress: bool = True, command: str | None = None
) -> list[Path]:
    """Train (or resume, or load when finished) each method's long run and store it; returns the folders.

    A method whose stored run already matches today's recipe is skipped; one stored with another recipe is
    refused (delete its folder to make it again), so nothing stored is replaced silently."""
    from sslbook.methods import REGISTRY
    from sslbook.trainer import train

    methods = list(methods or sorted(REGISTRY))
    unknown = [m for m in methods if m not in REGISTRY]
    if unknown:
        raise ReferenceError(f"unknown method {unknown[0]!r}; choose from {', '.join(sorted(REGISTRY))}")
    for m in methods:  # refuse before training anything
        resolve(m, PRESET)
        if m in available(where):
            differs = recipe_differences(load(m, where).config)
            if differs:
                k, (old, new) = next(iter(differs.items()))
                raise ReferenceError(
                    f"the stored long run of {m} in {folder(m, where)} was trained with {k}={old!r}, today's recipe "
                    f"has {k}={new!r}; delete that folder to make it again"
                )
    done = []
    for i, m in enumerate(methods, 1):
        if m in available(where):
            print(f"[{i}/{len(methods)}] {m}: stored in {folder(m, where)}, matches the recipe", file=sys.stderr)
            done.append(folder(m, where))
            continue
        cfg = resolve(m, PRESET)
        print(f"[{i}/{len(methods)}] {m}: {cfg.epochs} epochs at {PRESET!r} into {run_dir(m, PRESET)}", file=sys.stderr)
        result = train(m, PRESET, out=run_dir(m, PRESET), resume=True, progress=progress)
        info = DataInfo.from_dict(checkpoint.load(result.checkpoint)["info"])
        done.append(store(result, info, where, command=command or f"python -m sslbook reference {m}"))
        print(f"[{i}/{len(methods)}] {m}: stored in {done[-1]}", file=sys.stderr)
    return done

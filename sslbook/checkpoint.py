"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled classes), so
``torch.load(path, weights_only=True)`` reads it and loading runs no code:

    format, version      "sslbook-checkpoint-1", the sslbook version that wrote it
    config               the TrainConfig as a dict (the recipe that produced it)
    info                 the data set's DataInfo as a dict (classes, image size, mean, std)
    method               the method's state_dict (backbone, heads, momentum encoders, queues)
    optimizer            the optimiser's state_dict
    epoch, step          completed epochs and optimiser steps
    rng                  random-number-generator states, so a resumed run continues exactly
    history              logged values per step
    metrics              evaluation results (after training)
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "sslbook-checkpoint-1"


class CheckpointError(RuntimeError):
    pass


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``.

    A run interrupted while writing leaves the previous checkpoint intact, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint safely (``weights_only=True``); clear errors for missing or foreign files."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an sslbook checkpoint (format {FORMAT!r} expected)")
    return ckpt


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

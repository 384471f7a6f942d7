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
    train_seconds        training time so far (summed over resumes)
    monitor              the kNN learning curve so far
    changes              what each resume changed: [{"epoch", "step", "time", "changes": {key: [old, new]}}]

A run folder holds ``last.pt`` and ``.lock``: while a run trains, it holds an exclusive lock on ``.lock``
(:func:`lock_run_folder`), so a second run on the same folder is refused naming the process that trains there.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path

import torch

FORMAT = "sslbook-checkpoint-1"
# what the trainer's checkpoints always hold; a file with the format tag but without these is damaged
REQUIRED_KEYS = ("config", "info", "method", "optimizer", "epoch", "step", "rng", "history", "metrics")
LOCK_NAME = ".lock"


class CheckpointError(RuntimeError):
    pass


class RunFolderError(CheckpointError):
    """The run folder (``--out``) cannot be used: not writable, in use by another run, or holding a run
    that this one would replace."""


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``.

    A run interrupted while writing leaves the previous checkpoint intact, never a half-written one.
    """
    return write_atomic(path, lambda f: torch.save(obj, f))


def write_atomic(path: str | os.PathLike, write) -> Path:
    """``write(binary file)`` into a temporary file in ``path``'s folder, then rename it over ``path``: a
    reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself reaches the disk
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``*.pt.*.tmp`` files a killed write left in ``folder`` (call it holding the folder's lock)."""
    stale = sorted(Path(folder).glob("*.pt.*.tmp"))
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and check that a file can be written there, before any training."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--out {folder} is a file, not a folder: choose a folder for the run's checkpoints")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        try:
            os.write(fd, b"sslbook")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise RunFolderError(
            f"--out {folder} cannot hold the run's checkpoints: {e.strerror or e} "
            f"({type(e).__name__}); choose another folder"
        ) from e
    return folder


class RunLock:
    """An exclusive ``flock`` on ``folder/.lock``, held while a run trains there. The kernel releases it when
    the process ends, however it ends (``kill -9`` included), so a lock is never left stale."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 512, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            self._fd = None
            raise RunFolderError(
                f"--out {folder} is in use by another run ({holder}); wait for it to finish "
                "or choose another --out folder"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(
            self._fd,
            f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
            0,
        )

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


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
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} is an sslbook checkpoint without {', '.join(repr(k) for k in missing)}: "
            "it is damaged or was not written by sslbook's trainer; train the run again"
        )
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

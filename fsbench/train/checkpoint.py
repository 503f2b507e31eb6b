"""Self-describing training checkpoints, written atomically, read without unpickling code.

A checkpoint is one dict: ``{"format", "kind", "fsbench_version", "step", "epoch", "config",
"model", "head", "opt", "sched", "scaler", "rng"}`` (a loop may add keys). It is written to a
temporary name beside the target and renamed, so a kill mid-write leaves the previous
checkpoint intact; it is read with ``weights_only=True``, so a hostile file cannot run code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

import fsbench
from fsbench.errors import CheckpointError

__all__ = ["FORMAT", "load_checkpoint", "save_checkpoint"]

FORMAT = "fsbench-checkpoint-1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (plus format and version tags) to `path` via a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "fsbench_version": fsbench.__version__, **state}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(
    path: str | Path, *, kind: str | None = None, required: tuple[str, ...] = (), map_location: str = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint; a missing, truncated, foreign or wrong-kind file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(path, f"unreadable or truncated checkpoint ({first[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(path, f"not an fsbench checkpoint (expected format {FORMAT!r})")
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(path, f"is a {state.get('kind')!r} checkpoint, expected {kind!r}")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(path, f"checkpoint lacks {', '.join(missing)}")
    return state

"""Seeding and RNG snapshots: same seed, same numbers, also across a kill and a resume."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "rank_seed", "seed_everything", "set_rng_state"]


def rank_seed(seed: int, rank: int = 0, world_size: int = 1) -> int:
    """Each rank draws different dropout/augmentation noise, reproducibly (DiT's rule)."""
    return seed * world_size + rank


def seed_everything(seed: int, rank: int = 0, world_size: int = 1) -> int:
    """Seed python, numpy and torch (CPU and every GPU) for this rank; returns the rank seed."""
    s = rank_seed(seed, rank, world_size)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)  # also seeds every CUDA device
    return s


def get_rng_state() -> dict[str, Any]:
    """Every global generator's state, in types that `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `get_rng_state` saved (CUDA states only where GPUs are present)."""
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def _tuples(obj: Any) -> Any:
    """random.setstate wants tuples; a checkpoint round trip may hand back lists."""
    if isinstance(obj, (list, tuple)):
        return tuple(_tuples(o) for o in obj)
    return obj

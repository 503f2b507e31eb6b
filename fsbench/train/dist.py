"""torchrun / DDP awareness without side effects at import time.

`detect()` reads torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE); a plain `python`
launch is one process, rank 0 of 1. The process group starts only in `init()`, called by a
training loop once it knows its device, and is torn down by `shutdown()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["DistInfo", "all_reduce_mean", "barrier", "detect", "init", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs, shows progress and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect() -> DistInfo:
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), world)


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group torchrun set up (NCCL on GPUs, Gloo on CPU); no-op for one process."""
    import torch.distributed as td

    if not info.distributed or td.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def shutdown() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def barrier() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (for logging a loss every rank computed on its own shard)."""
    import torch.distributed as td

    if not (td.is_available() and td.is_initialized()):
        return value
    value = value.detach().clone()
    td.all_reduce(value)
    return value / td.get_world_size()

"""Where to run and in which precision: CUDA when present, else CPU; AMP only on CUDA."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from fsbench.errors import UsageError

__all__ = ["amp_context", "compute_platform", "grad_scaler", "pick_device", "use_amp"]


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: cuda:<local_rank> when CUDA is available, else cpu. `cpu`/`cuda` force one."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UsageError(f"device={requested!r}: expected auto, cpu or cuda")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("device=cuda was asked for but torch sees no CUDA GPU (use device=auto or cpu)")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def use_amp(device: torch.device, wanted: bool) -> bool:
    """Mixed precision helps only on GPUs; on CPU it would be slower and change the numbers."""
    return bool(wanted) and device.type == "cuda"


def amp_context(
    device: torch.device, enabled: bool, dtype: torch.dtype = torch.float16
) -> contextlib.AbstractContextManager[Any]:
    """Autocast on CUDA (fp16 as arcface_torch trains, or bf16), a no-op otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """Loss scaling for fp16; disabled (a pass-through) on CPU or without AMP."""
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


def compute_platform(device: torch.device | None = None) -> dict[str, Any]:
    """What a trained model's last bits depend on besides seed and data, for the record:
    torch picks ISA-specific kernels (oneDNN's AVX2 and AVX-512 convolutions sum in other
    orders), so the same seed trains the same weights only on the same kind of machine."""
    import platform

    info: dict[str, Any] = {"torch": torch.__version__, "machine": platform.machine(),
                            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                            "threads": torch.get_num_threads()}
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    return info

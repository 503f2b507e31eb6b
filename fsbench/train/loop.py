"""One training loop for everything fsbench trains: FR models and every generator stage.

The caller says what one step does (a `step_fn` over a batch); the loop owns the rest, once:
exact resume (weights, optimizers, schedulers, EMA copies, loss scalers, extra running
tensors, the RNGs and the position inside the epoch), rank seeding and DDP under
`torchrun`, AMP, checkpoint cadence, ``metrics.jsonl`` (lines past the resumed checkpoint are
dropped, so every step is logged once), the progress bar and the platform provenance in
``config.json``. A run killed at any point and started again ends with the same bytes as an
uninterrupted one (tests/test_train_loop.py checks it for SGD, AdamW + EMA and a GAN's two
optimizers).

    env = TrainEnv.setup(device="auto", amp=True, seed=cfg.seed)
    state = TrainState(modules={"net": net}, optimizers={"adamw": opt}, ema={"net": make_ema(net)})

    def step(ctx: StepContext, batch) -> dict[str, float]:
        with ctx.autocast():
            loss = ctx.net("net")(batch).square().mean()
        ctx.backward(loss, "adamw")
        ctx.update_ema("net", 0.999)
        return {"loss": loss}

    train_loop(run_dir, state, step, batches, env=env, total_steps=1000, kind="toy", config=cfg_dict)

`batches` is anything with `steps_per_epoch` and `epoch(epoch, start)` yielding one batch per
step from step-in-epoch `start` in an order fixed by (seed, epoch): `fsbench.train.data.TrainBatches`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

import fsbench
from fsbench import ui
from fsbench.data.dataset import same_fingerprint
from fsbench.errors import CheckpointError, TrainingError, UsageError
from fsbench.train import dist
from fsbench.train.checkpoint import load_checkpoint, save_checkpoint
from fsbench.train.device import amp_context, compute_platform, grad_scaler, pick_device, use_amp
from fsbench.train.seed import get_rng_state, seed_everything, set_rng_state

__all__ = [
    "CHECKPOINT", "BatchSource", "LoopResult", "StepContext", "TrainEnv", "TrainState",
    "ema_update", "make_ema", "train_loop", "write_json",
]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.json"


class BatchSource(Protocol):
    steps_per_epoch: int

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]: ...


# --------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class TrainEnv:
    """Where and how this process trains: device, precision, rank, seed."""

    device: torch.device
    amp: bool  # autocast on (CUDA only)
    amp_dtype: torch.dtype
    dist: dist.DistInfo
    seed: int

    @classmethod
    def setup(cls, device: str = "auto", amp: bool = True, seed: int = 0, amp_dtype: str = "fp16") -> TrainEnv:
        """Read torchrun's environment, join the process group, seed this rank (DiT's rule).

        fp16 (arcface_torch's choice) trains with loss scaling; bf16 (diffusion, GANs on
        Ampere and later) needs none."""
        if amp_dtype not in ("fp16", "bf16"):
            raise UsageError(f"amp_dtype={amp_dtype!r}: expected fp16 or bf16")
        info = dist.detect()
        dev = pick_device(device, info.local_rank)
        dist.init(info, dev)
        seed_everything(seed, info.rank, info.world_size)
        dtype = torch.float16 if amp_dtype == "fp16" else torch.bfloat16
        return cls(dev, use_amp(dev, amp), dtype, info, seed)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


# --------------------------------------------------------------------------- state


def make_ema(module: nn.Module) -> nn.Module:
    """A frozen copy of `module` that `ema_update` moves towards it (sampling uses it)."""
    ema = copy.deepcopy(module).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, module: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * module for parameters; buffers (BN statistics) copied."""
    for e, p in zip(ema.parameters(), module.parameters(), strict=True):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
    for e, b in zip(ema.buffers(), module.buffers(), strict=True):
        e.copy_(b)


@dataclass
class TrainState:
    """Everything a step changes, by name: what a checkpoint holds and a resume restores.

    `tensors` holds running values that are neither weights nor optimizer state (VIGFace's
    smoothed sigma of Eq. 7). One loss scaler per optimizer is made by the loop."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedulers: dict[str, Any] = field(default_factory=dict)  # anything with state_dict()
    ema: dict[str, nn.Module] = field(default_factory=dict)  # name of a module -> its average
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    scalers: dict[str, torch.amp.GradScaler] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "ema": {k: m.state_dict() for k, m in self.ema.items()},
            "tensors": {k: t.detach().clone() for k, t in self.tensors.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items() if s.is_enabled()},
        }

    def load_state_dict(self, state: Mapping[str, Any], path: Path) -> None:
        """Restore in place; a checkpoint of another model is a one-line CheckpointError."""
        try:
            for group in ("modules", "optimizers", "schedulers", "ema"):
                mine, saved = getattr(self, group), state[group]
                if set(mine) != set(saved):
                    raise KeyError(f"{group} {sorted(saved)} where this run has {sorted(mine)}")
                for name, obj in mine.items():
                    obj.load_state_dict(saved[name])
            if set(self.tensors) != set(state["tensors"]):
                raise KeyError(f"tensors {sorted(state['tensors'])} where this run has {sorted(self.tensors)}")
            for name, t in self.tensors.items():
                t.copy_(state["tensors"][name])
            for name, scaler in self.scalers.items():
                if scaler.is_enabled() and name in state["scalers"]:
                    scaler.load_state_dict(state["scalers"][name])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(path, f"does not fit this model ({str(exc).splitlines()[0][:160]})") from None


# --------------------------------------------------------------------------- one step


class StepContext:
    """What a step function may use: the wrapped modules, autocast, one optimizer step."""

    def __init__(self, env: TrainEnv, state: TrainState, nets: dict[str, nn.Module], steps_per_epoch: int):
        self.env, self.state, self._nets, self.steps_per_epoch = env, state, nets, steps_per_epoch
        self.step = 0  # global index of the step being made (0-based)

    @property
    def device(self) -> torch.device:
        return self.env.device

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    def net(self, name: str) -> nn.Module:
        """The module to call in the step: DDP-wrapped under torchrun, else the module itself."""
        return self._nets[name]

    def autocast(self) -> AbstractContextManager[Any]:
        return amp_context(self.env.device, self.env.amp, self.env.amp_dtype)

    def backward(self, loss: torch.Tensor, optimizer: str) -> None:
        """zero_grad, (scaled) backward, optimizer step, scaler update: one optimizer's step."""
        opt, scaler = self.state.optimizers[optimizer], self.state.scalers[optimizer]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def update_ema(self, name: str, decay: float) -> None:
        ema_update(self.state.ema[name], self.state.modules[name], decay)


StepFn = Callable[[StepContext, Any], Mapping[str, float | torch.Tensor]]


# --------------------------------------------------------------------------- the loop


@dataclass
class LoopResult:
    run_dir: Path
    checkpoint: Path
    steps: int
    seconds: float
    loss: float  # mean of the `loss` logged over the last 20 steps (NaN when no step ran)
    last: dict[str, float]


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON file (a temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # the line being written when the run died
    path.write_text("".join(k + "\n" for k in keep))


def _check_resume(saved: Mapping[str, Any], config: Mapping[str, Any], fingerprint: str,
                  resumable: frozenset[str], path: Path) -> None:
    old = saved.get("config", {})
    changed = sorted(k for k in config if k not in resumable and old.get(k) != config[k])
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {config[k]!r}" for k in changed)
        raise UsageError(f"{path}: this run was started with other settings ({diffs}); use a new --run folder")
    if not same_fingerprint(saved.get("data_fingerprint"), fingerprint):
        raise UsageError(f"{path}: this run was trained on other data; use a new --run folder")


def _wrap(env: TrainEnv, state: TrainState) -> dict[str, nn.Module]:
    nets: dict[str, nn.Module] = {}
    for name, module in state.modules.items():
        trainable = any(p.requires_grad for p in module.parameters())
        if env.dist.distributed and trainable:
            ids = [env.device.index] if env.device.type == "cuda" else None
            nets[name] = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        else:
            nets[name] = module
    return nets


def _scalar(value: float | torch.Tensor) -> float:
    if isinstance(value, torch.Tensor):
        return float(dist.all_reduce_mean(value.detach().float()))
    return float(value)


def train_loop(
    run_dir: str | Path,
    state: TrainState,
    step_fn: StepFn,
    batches: BatchSource,
    *,
    env: TrainEnv,
    total_steps: int,
    kind: str,
    config: Mapping[str, Any],
    checkpoint_every: int = 1000,
    batch_size: int = 0,
    fingerprint: str = "",
    record: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    resumable: frozenset[str] = frozenset(),
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    show_progress: bool = True,
    description: str = "training",
) -> LoopResult:
    """Train `state` with `step_fn` to `total_steps`, resuming from ``run_dir/checkpoint.pt``.

    `config` is compared on resume (keys in `resumable` may change: max_steps, workers...);
    `record` is written to config.json with the platform; `extra` rides in every checkpoint
    (class names, say). `on_step(step, record)` runs after each step (tests "kill" runs there).
    """
    run_dir = Path(run_dir)
    ckpt_path, metrics_path = run_dir / CHECKPOINT, run_dir / METRICS
    for name in state.optimizers:
        state.scalers.setdefault(name, grad_scaler(env.device, env.amp and env.amp_dtype == torch.float16))
    spe = batches.steps_per_epoch
    step = 0
    if ckpt_path.exists():
        saved = load_checkpoint(ckpt_path, kind=kind, required=("state", "step", "config", "rng"))
        _check_resume(saved, config, fingerprint, resumable, ckpt_path)
        state.load_state_dict(saved["state"], ckpt_path)
        step = int(saved["step"])
        if env.is_main:
            set_rng_state(saved["rng"])
            _truncate_metrics(metrics_path, step)
        else:  # only rank 0's generators are saved; the others restart from a derived seed
            seed_everything(env.seed * 1_000_003 + step, env.dist.rank, env.dist.world_size)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG, {
            **(record or config), "data_fingerprint": fingerprint, "steps_per_epoch": spe, "total_steps": total_steps,
            "world_size": env.dist.world_size, "device_used": str(env.device), "amp_used": env.amp,
            "fsbench_version": fsbench.__version__, "platform": compute_platform(env.device),
        })

    def save() -> None:
        if env.is_main:
            save_checkpoint(ckpt_path, {
                "kind": kind, "step": step, "epoch": step // spe, "config": dict(config),
                "data_fingerprint": fingerprint, **(extra or {}), "state": state.state_dict(), "rng": get_rng_state(),
            })
        dist.barrier()

    ctx = StepContext(env, state, _wrap(env, state), spe)
    for module in state.modules.values():
        module.train()
    start, losses, last = time.perf_counter(), [], {}
    log = open(metrics_path, "a") if env.is_main else None
    try:
        with ui.progress() as bar:
            task = bar.add_task(description, total=total_steps, completed=step, rate="", unit="steps",
                                visible=show_progress and env.is_main)
            while step < total_steps:
                epoch = step // spe
                t0 = time.perf_counter()
                for batch in batches.epoch(epoch, start=step - epoch * spe):
                    ctx.step = step
                    values = {k: _scalar(v) for k, v in step_fn(ctx, batch).items()}
                    step += 1
                    now = time.perf_counter()  # loading + step, as the user waits for it
                    rate, t0 = batch_size / max(now - t0, 1e-9), now
                    last = {"step": step, "epoch": epoch, **values, "images_per_s": rate,
                            "elapsed_s": now - start}
                    bad = [k for k, v in values.items() if k.startswith("loss") and not math.isfinite(v)]
                    if bad:
                        raise TrainingError(f"{run_dir}: {bad[0]} is {values[bad[0]]} at step {step}: training "
                                            f"diverged (lower the learning rate); the last checkpoint is kept")
                    if "loss" in values:
                        losses = (losses + [values["loss"]])[-20:]
                    if log is not None:
                        log.write(json.dumps(last) + "\n")
                        log.flush()
                    shown = " ".join(f"{k} {v:.3f}" for k, v in list(values.items())[:3])
                    bar.update(task, advance=1, rate=f"{shown} {rate:.0f} img/s")
                    if step % checkpoint_every == 0 or step == total_steps:
                        save()
                    if on_step is not None:
                        on_step(step, last)
                    if step >= total_steps:
                        break
    finally:
        if log is not None:
            log.close()
    loss = sum(losses) / len(losses) if losses else float("nan")
    return LoopResult(run_dir, ckpt_path, step, time.perf_counter() - start, loss, last)

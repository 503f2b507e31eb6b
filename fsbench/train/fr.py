"""Face-recognition training: IResNet + margin head, SGD with step decay, exact resume.

One process (CPU or one GPU)::

    fsbench fr train --data DATA --run runs/fr --preset tiny
    fsbench fr train --data CASIA --run runs/casia --preset casia -o batch_size=256

N GPUs, the same code (batch_size is the global batch, split evenly over the ranks)::

    torchrun --nproc_per_node=N -m fsbench.cli fr train --data CASIA --run-dir runs/casia --preset casia

The run folder holds config.json (resolved config, seed, data fingerprint), metrics.jsonl
(one line per step), checkpoint.pt (everything needed to resume, rewritten every
`checkpoint_every` steps) and, at the end, backbone.pth: a plain IResNet state_dict in
arcface_torch's layout. Running the same command again resumes from checkpoint.pt and ends
with the weights an uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fsbench.data import FaceDataset
from fsbench.errors import CheckpointError, DatasetError, UsageError
from fsbench.nn.iresnet import ARCHS, IResNet, get_model
from fsbench.nn.margin import MARGINS, LinearHead, MarginHead
from fsbench.train import dist
from fsbench.train.checkpoint import load_checkpoint
from fsbench.train.config import resolve
from fsbench.train.data import RESIZE, TrainBatches, normalize
from fsbench.train.loop import CHECKPOINT, StepContext, TrainEnv, TrainState, train_loop

__all__ = ["FR_PRESETS", "FRModel", "FRRun", "fr_config", "load_backbone", "train_fr"]

# --------------------------------------------------------------------------- presets

FR_PRESETS: dict[str, dict[str, Any]] = {
    # The papers' CASIA-WebFace schedule (VIGFace section 5.1): ResNet-50 + ArcFace (m 0.5,
    # s 30), 112x112 input in [-1, 1], batch 512, SGD momentum 0.9, wd 5e-4, lr 0.1 divided
    # by 10 at epochs 24, 30 and 36, 40 epochs. For MS1M-V2 the paper uses s 64 and decays
    # at 10/18/22 of 25 epochs: -o s=64 -o lr_steps=10,18,22 -o epochs=25.
    "casia": {
        "network": "r50",
        "width": 64,  # layer1 planes; 64 = standard IResNet
        "input_size": 112,
        "embedding_size": 512,
        "dropout": 0.0,
        "margin": "arcface",  # arcface | cosface | softmax (cosine, no margin) | linear (fc + bias)
        "m": 0.5,  # arcface: additive angle m2; cosface: cosine margin m3; others: unused
        "s": 30.0,
        "batch_size": 512,  # global, over all processes
        "epochs": 40,
        "lr": 0.1,
        "lr_steps": (24, 30, 36),  # epochs at which lr is multiplied by lr_decay
        "lr_decay": 0.1,
        "warmup_steps": 0,  # linear lr warm-up (the paper uses none)
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "flip": True,
        "amp": True,  # fp16 autocast + loss scaling, on CUDA only
        "device": "auto",
        "seed": 0,
        "max_steps": 0,  # > 0: stop early at this step (tests, smoke runs); schedule unchanged
        "checkpoint_every": 2000,
        "workers": 8,
        "cache_images": False,
    },
    # CPU in minutes on the embedded world: a non-standard narrow IResNet (one block per
    # stage, 8 planes, ~0.15 M parameters) at 48 px, the same optimiser and ArcFace family,
    # a short schedule. ~420 images/s on one busy CPU core: 8,000 images x 10 epochs in ~3 min.
    "tiny": {
        "network": "r4",
        "width": 8,
        "input_size": 48,
        "embedding_size": 128,
        "dropout": 0.0,
        "margin": "arcface",
        "m": 0.3,
        "s": 30.0,
        "batch_size": 64,
        "epochs": 10,
        "lr": 0.1,
        "lr_steps": (6, 8),
        "lr_decay": 0.1,
        "warmup_steps": 100,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "flip": True,
        "amp": True,
        "device": "auto",
        "seed": 0,
        "max_steps": 0,
        "checkpoint_every": 200,
        "workers": 2,
        "cache_images": True,
    },
}
# SegTex's classification protocol (Table 7): ResNet-50, plain softmax cross-entropy, lr
# 0.01. The paper gives nothing else; batch, epochs and decay below are our choice.
FR_PRESETS["segtex"] = {
    **FR_PRESETS["casia"],
    "margin": "linear",
    "lr": 0.01,
    "batch_size": 256,
    "epochs": 20,
    "lr_steps": (12, 16),
}

# Keys that may change between a run and its resumption without changing the result.
RESUMABLE_CHANGES = frozenset({"max_steps", "checkpoint_every", "workers", "cache_images", "epochs"})

BACKBONE = "backbone.pth"


def fr_config(preset: str = "tiny", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset with type-checked overrides; values that make no sense are refused by name."""
    cfg = resolve(FR_PRESETS, preset, overrides, where=f"fr preset {preset!r}")
    if cfg["network"] not in ARCHS:
        raise UsageError(f"network={cfg['network']!r}: expected one of {', '.join(ARCHS)}")
    if cfg["margin"] not in (*MARGINS, "linear"):
        raise UsageError(f"margin={cfg['margin']!r}: expected one of {', '.join(MARGINS)}, linear")
    for key in ("batch_size", "epochs", "input_size", "embedding_size", "width", "checkpoint_every"):
        if cfg[key] < 1:
            raise UsageError(f"{key}={cfg[key]} must be at least 1")
    if list(cfg["lr_steps"]) != sorted(cfg["lr_steps"]):
        raise UsageError(f"lr_steps={cfg['lr_steps']} must be increasing epochs")
    if not 0.0 <= cfg["dropout"] < 1.0:
        raise UsageError(f"dropout={cfg['dropout']} must be in [0, 1)")
    return cfg


def margin_params(cfg: dict[str, Any]) -> tuple[float, float, float]:
    m1, m2, m3 = MARGINS[cfg["margin"]]
    if cfg["margin"] == "arcface":
        m2 = cfg["m"]
    elif cfg["margin"] == "cosface":
        m3 = cfg["m"]
    return m1, m2, m3


def lr_at(cfg: dict[str, Any], step: int, steps_per_epoch: int) -> float:
    """Step decay by epoch, with an optional linear warm-up over the first steps."""
    epoch = step // steps_per_epoch
    lr = cfg["lr"] * cfg["lr_decay"] ** sum(epoch >= e for e in cfg["lr_steps"])
    if cfg["warmup_steps"] and step < cfg["warmup_steps"]:
        lr *= (step + 1) / cfg["warmup_steps"]
    return lr


# --------------------------------------------------------------------------- model


class FRModel(nn.Module):
    """Backbone + margin head as one module, so DDP synchronises both in one go."""

    def __init__(self, backbone: IResNet, head: MarginHead | LinearHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.backbone(images)  # (B, D)
        logits = self.head(emb, labels)  # (B, C + k), float32
        return logits, emb


def build_model(cfg: dict[str, Any], num_classes: int) -> FRModel:
    backbone = get_model(
        cfg["network"], cfg["embedding_size"], cfg["dropout"], cfg["input_size"], cfg["width"]
    )
    if cfg["margin"] == "linear":
        head: MarginHead | LinearHead = LinearHead(num_classes, cfg["embedding_size"])
    else:
        head = MarginHead(num_classes, cfg["embedding_size"], cfg["s"], *margin_params(cfg))
    return FRModel(backbone, head)


# --------------------------------------------------------------------------- loop


@dataclass
class FRRun:
    run_dir: Path
    checkpoint: Path
    backbone: Path
    steps: int
    seconds: float
    loss: float  # mean loss over the last logged steps (NaN if no step ran)
    config: dict[str, Any]


def fr_state(cfg: dict[str, Any], num_classes: int, device: torch.device) -> TrainState:
    """Backbone, margin head and their SGD optimizer, as the training loop keeps them."""
    model = build_model(cfg, num_classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad]  # `features.weight` is frozen
    opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    return TrainState(modules={"backbone": model.backbone, "head": model.head}, optimizers={"sgd": opt})


def fr_step(cfg: dict[str, Any]) -> Callable[[StepContext, Any], dict[str, Any]]:
    """One SGD step of margin-softmax training, lr set by `lr_at` (step decay by epoch)."""

    def step(ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        images, labels = batch
        lr = lr_at(cfg, ctx.step, ctx.steps_per_epoch)
        for group in ctx.state.optimizers["sgd"].param_groups:
            group["lr"] = lr
        x, y = normalize(images.to(ctx.device, non_blocking=True)), labels.to(ctx.device)
        with ctx.autocast():
            logits = ctx.net("head")(ctx.net("backbone")(x), y)  # (B, C), float32
        loss = nn.functional.cross_entropy(logits.float(), y)
        ctx.backward(loss, "sgd")
        with torch.no_grad():
            acc = (logits.argmax(1) == y).float().mean()
        return {"loss": loss.detach(), "acc": acc, "lr": lr}

    return step


def train_fr(
    data: FaceDataset | str | Path,
    run_dir: str | Path,
    preset: str = "tiny",
    overrides: dict[str, Any] | None = None,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    show_progress: bool = True,
    indices: np.ndarray | None = None,
) -> FRRun:
    """Train (or resume) a face-recognition model on `data` into `run_dir`.

    `indices` restricts training to those items (the head still has every identity);
    `on_step(step, record)` is called after every step (tests use it to "kill" a run).
    Rank 0 holds the run folder's lock throughout (`fsbench.data.lock.rank0_folder_lock`).
    """
    from fsbench.data.lock import rank0_folder_lock

    with rank0_folder_lock(run_dir):
        cfg = fr_config(preset, overrides)
        ds = data if isinstance(data, FaceDataset) else FaceDataset.open(data)
        if ds.num_identities < 2:
            raise DatasetError(ds.root, f"has {ds.num_identities} identity; face-recognition training needs at least 2")
        run_dir = Path(run_dir)
        env = TrainEnv.setup(cfg["device"], cfg["amp"], cfg["seed"])
        batches = TrainBatches(
            ds, cfg["batch_size"], cfg["input_size"], cfg["seed"], env.dist.rank, env.dist.world_size,
            flip=cfg["flip"], cache=cfg["cache_images"], workers=cfg["workers"],
            show_progress=show_progress and env.is_main, indices=indices,
        )
        spe = batches.steps_per_epoch
        data_fp = ds.fingerprint()
        if indices is not None:  # a subset is other data: include which items in the key
            data_fp += "-" + hashlib.sha256(batches.pool.tobytes()).hexdigest()[:8]
        total = cfg["epochs"] * spe if cfg["max_steps"] <= 0 else min(cfg["max_steps"], cfg["epochs"] * spe)
        state = fr_state(cfg, ds.num_identities, env.device)
        resized = tuple(ds.image_size) != (cfg["input_size"],) * 2
        result = train_loop(
            run_dir, state, fr_step(cfg), batches, env=env, total_steps=total, kind="fr", config=cfg,
            checkpoint_every=cfg["checkpoint_every"], batch_size=cfg["batch_size"], fingerprint=data_fp,
            record={"preset": preset, **cfg, "data": str(ds.root), "num_classes": ds.num_identities,
                    "images": len(batches.pool), "resize": RESIZE if resized else "none"},
            extra={"identities": list(ds.identities)}, resumable=RESUMABLE_CHANGES, on_step=on_step,
            show_progress=show_progress,
        )
        if env.is_main:
            tmp = run_dir / f".{BACKBONE}.tmp-{os.getpid()}"
            torch.save(state.modules["backbone"].state_dict(), tmp)
            os.replace(tmp, run_dir / BACKBONE)
        dist.barrier()
        return FRRun(run_dir, result.checkpoint, run_dir / BACKBONE, result.steps, result.seconds, result.loss, cfg)


def load_backbone(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[IResNet, dict[str, Any]]:
    """The trained backbone of a run (eval mode) and the run's config."""
    run_dir = Path(run_dir)
    cfg_path, weights = run_dir / "config.json", run_dir / BACKBONE
    if not cfg_path.exists():
        raise UsageError(f"{run_dir}: not an fr training run (no config.json)")
    if not weights.exists():
        raise CheckpointError(weights, "missing: the run has not finished (run `fsbench fr train` again to resume)")
    cfg = json.loads(cfg_path.read_text())
    model = get_model(cfg["network"], cfg["embedding_size"], 0.0, cfg["input_size"], cfg["width"])
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # torch raises several types for a bad or foreign file
        raise CheckpointError(weights, f"cannot load into {cfg['network']} ({str(exc).splitlines()[0][:160]})") from None
    return model.to(device).eval(), cfg


def load_fr_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[FRModel, dict[str, Any], list[str]]:
    """Backbone + head of a run's last checkpoint (eval mode), its config and class names."""
    path = Path(run_dir) / CHECKPOINT
    state = load_checkpoint(path, kind="fr", required=("state", "config", "identities"))
    cfg, identities = dict(state["config"]), list(state["identities"])
    model = build_model(cfg, len(identities))
    try:
        model.backbone.load_state_dict(state["state"]["modules"]["backbone"])
        model.head.load_state_dict(state["state"]["modules"]["head"])
    except RuntimeError as exc:
        raise CheckpointError(path, f"does not fit its own config ({str(exc).splitlines()[0][:160]})") from None
    return model.to(device).eval(), cfg, identities

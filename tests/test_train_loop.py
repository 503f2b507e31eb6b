"""The one training loop: a killed run resumes to the bytes of an uninterrupted one, for the
optimizers fsbench's generators use (AdamW + EMA for diffusion, two Adams for a GAN), with
dropout and in-step noise drawing on the global RNGs, a scheduler and an extra running tensor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fsbench.errors import CheckpointError, TrainingError, UsageError
from fsbench.train.checkpoint import load_checkpoint
from fsbench.train.loop import StepContext, TrainEnv, TrainState, ema_update, make_ema, train_loop


class ToyBatches:
    """(B, 8) float batches of a fixed random set, order fixed by (seed, epoch)."""

    def __init__(self, n: int = 40, batch_size: int = 8, seed: int = 0):
        self.x = torch.from_numpy(np.random.default_rng(123).normal(size=(n, 8)).astype(np.float32))
        self.batch_size, self.seed = batch_size, seed
        self.steps_per_epoch = n // batch_size

    def epoch(self, epoch: int, start: int = 0):
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
        for k in range(start, self.steps_per_epoch):
            yield self.x[perm[k * self.batch_size:(k + 1) * self.batch_size]]


class Killed(Exception):
    pass


def kill_at(n: int):
    def hook(step, record):
        if step == n:
            raise Killed

    return hook


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.3), nn.GELU(), nn.Linear(16, 8))


# --------------------------------------------------------------------------- diffusion-like: AdamW + EMA


def diffusion_state(seed: int = 0) -> TrainState:
    torch.manual_seed(seed)
    net = mlp()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    return TrainState(modules={"net": net}, optimizers={"adamw": opt}, schedulers={"lr": sched},
                      ema={"net": make_ema(net)}, tensors={"sigma": torch.ones(())})


def diffusion_step(ctx: StepContext, x0: torch.Tensor) -> dict:
    """Denoise x0 + noise (noise from the global RNG), AdamW step, EMA update, a running tensor."""
    t = torch.rand(len(x0), 1)
    xt = (1 - t) * x0 + t * torch.randn_like(x0)
    with ctx.autocast():
        loss = (ctx.net("net")(xt) - x0).square().mean()
    ctx.backward(loss, "adamw")
    ctx.state.schedulers["lr"].step()
    ctx.update_ema("net", 0.9)
    sigma = ctx.state.tensors["sigma"]
    sigma.mul_(0.9).add_(0.1 * loss.detach())
    return {"loss": loss.detach(), "sigma": sigma.clone()}


def run_diffusion(run_dir: Path, total: int = 15, every: int = 4, on_step=None, cfg=None) -> TrainState:
    env = TrainEnv.setup("cpu", amp=False, seed=3)
    state = diffusion_state()
    train_loop(run_dir, state, diffusion_step, ToyBatches(), env=env, total_steps=total, kind="toy-diffusion",
               config=cfg or {"lr": 1e-2, "total": 15}, checkpoint_every=every, batch_size=8,
               fingerprint="toy", on_step=on_step, show_progress=False, resumable=frozenset({"total"}))
    return state


def state_bytes(state: TrainState) -> dict[str, torch.Tensor]:
    sd = state.state_dict()
    flat = {}
    for group in ("modules", "ema"):
        for name, tensors in sd[group].items():
            flat.update({f"{group}.{name}.{k}": v for k, v in tensors.items()})
    for name, opt in sd["optimizers"].items():
        for pid, s in opt["state"].items():
            flat.update({f"opt.{name}.{pid}.{k}": v for k, v in s.items() if isinstance(v, torch.Tensor)})
    flat.update({f"tensor.{k}": v for k, v in sd["tensors"].items()})
    return flat


def assert_same(a: TrainState, b: TrainState) -> None:
    fa, fb = state_bytes(a), state_bytes(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert torch.equal(fa[k], fb[k]), k


def test_adamw_ema_resume_after_a_kill_is_exact(tmp_path):
    full = run_diffusion(tmp_path / "full")
    with pytest.raises(Killed):
        run_diffusion(tmp_path / "cut", on_step=kill_at(10))  # checkpoint at 8, steps 9-10 lost
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["step"] == 8
    resumed = run_diffusion(tmp_path / "cut")
    assert_same(full, resumed)
    # the EMA really averages (it is not the model), the scheduler decayed lr 3 times (steps 4, 8, 12)
    assert not torch.equal(full.ema["net"][0].weight, full.modules["net"][0].weight)
    assert full.optimizers["adamw"].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**3)
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 16))  # each step logged once
    assert [r["loss"] for r in lines] == [r["loss"] for r in ref]
    cfg = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert cfg["total_steps"] == 15 and cfg["steps_per_epoch"] == 5 and cfg["platform"]["device"] == "cpu"


def test_a_kill_without_a_checkpoint_yet_restarts_from_scratch_to_the_same_bytes(tmp_path):
    full = run_diffusion(tmp_path / "full", every=100)
    with pytest.raises(Killed):
        run_diffusion(tmp_path / "cut", every=100, on_step=kill_at(3))
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()
    assert_same(full, run_diffusion(tmp_path / "cut", every=100))


def test_ema_update_is_the_exponential_average():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    before = a.weight.detach().clone()
    ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, 0.75 * before + 0.25 * b.weight)


def test_resume_refuses_other_settings_and_other_models(tmp_path):
    run_diffusion(tmp_path / "run", total=4)
    with pytest.raises(UsageError, match=r"lr: 0.01 -> 0.02"):
        run_diffusion(tmp_path / "run", total=6, cfg={"lr": 2e-2, "total": 15})
    run_diffusion(tmp_path / "run", total=6, cfg={"lr": 1e-2, "total": 20})  # a resumable key may change
    env = TrainEnv.setup("cpu", amp=False, seed=3)
    other = TrainState(modules={"net": nn.Linear(8, 8)}, optimizers={"adamw": torch.optim.AdamW(nn.Linear(8, 8).parameters())})
    with pytest.raises(CheckpointError, match="does not fit this model"):
        train_loop(tmp_path / "run", other, diffusion_step, ToyBatches(), env=env, total_steps=8, kind="toy-diffusion",
                   config={"lr": 1e-2, "total": 15}, fingerprint="toy", show_progress=False, resumable=frozenset({"total"}))
    with pytest.raises(CheckpointError, match="expected 'gan'"):
        run_gan(tmp_path / "run")


def test_a_diverging_loss_stops_with_one_line_and_keeps_the_checkpoint(tmp_path):
    env = TrainEnv.setup("cpu", amp=False, seed=0)
    state = diffusion_state()

    def step(ctx, x):
        loss = ctx.net("net")(x).square().mean() * (float("nan") if ctx.step == 5 else 1.0)
        ctx.backward(loss, "adamw")
        return {"loss": loss.detach()}

    with pytest.raises(TrainingError, match="loss is nan at step 6"):
        train_loop(tmp_path / "r", state, step, ToyBatches(), env=env, total_steps=10, kind="toy", config={},
                   checkpoint_every=2, show_progress=False)
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 4


# --------------------------------------------------------------------------- GAN: two optimizers


def gan_state() -> TrainState:
    torch.manual_seed(1)
    g, d = mlp(), nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    return TrainState(modules={"g": g, "d": d}, optimizers={
        "g": torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.5, 0.999)),
        "d": torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.5, 0.999)),
    })


def gan_step(ctx: StepContext, real: torch.Tensor) -> dict:
    """Least-squares GAN: D on real vs detached fake, then G through D."""
    g, d = ctx.net("g"), ctx.net("d")
    fake = g(torch.randn_like(real))
    loss_d = ((d(real) - 1) ** 2).mean() + (d(fake.detach()) ** 2).mean()
    ctx.backward(loss_d, "d")
    loss_g = ((d(fake) - 1) ** 2).mean()
    ctx.backward(loss_g, "g")
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}


def run_gan(run_dir: Path, on_step=None) -> TrainState:
    env = TrainEnv.setup("cpu", amp=False, seed=5)
    state = gan_state()
    train_loop(run_dir, state, gan_step, ToyBatches(), env=env, total_steps=12, kind="gan", config={"lr": 2e-3},
               checkpoint_every=5, fingerprint="toy", on_step=on_step, show_progress=False)
    return state


def test_gan_two_optimizers_resume_after_a_kill_is_exact(tmp_path):
    full = run_gan(tmp_path / "full")
    with pytest.raises(Killed):
        run_gan(tmp_path / "cut", on_step=kill_at(7))
    resumed = run_gan(tmp_path / "cut")
    assert_same(full, resumed)
    # both networks moved, and differently from another seed's run
    fresh = gan_state()
    assert not torch.equal(fresh.modules["d"][0].weight, full.modules["d"][0].weight)
    assert not torch.equal(fresh.modules["g"][0].weight, full.modules["g"][0].weight)

"""A tiny trainable generator for the platform's tests: two stages, init-from, EMA, a sampler.

Stage ``mean`` learns each identity's mean image (an embedding table, Adam); stage ``noise``
starts from it and learns a per-pixel noise scale with AdamW and an EMA copy. Sampling draws
``mean[row] + noise * scale * N(0, 1)`` with noise from the key alone. Loaded as a loose
plugin file (FSBENCH_PLUGINS_DIR), so CLI subprocesses find it as users' plugins are found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import fsbench
from fsbench.api import Generator, Identity, Sample, Sampler, Stage, StagePlan, TrainConfig
from fsbench.errors import UsageError
from fsbench.options import opt


@dataclass(frozen=True)
class ToyConfig(TrainConfig):
    size: int = opt(16, "image side the generator works at", min=4, max=64)
    lr: float = opt(0.05, "learning rate of both stages", min=0, min_exclusive=True)
    steps: int = opt(12, "steps per stage", min=1)
    batch_size: int = opt(8, "images per step", min=1)
    checkpoint_every: int = opt(4, "steps between checkpoints", min=1)


@dataclass(frozen=True)
class ToyOptions:
    noise: float = opt(1.0, "scale of the learned noise at sampling", min=0)
    weights: str = opt("ema", "which weights to sample: ema or last", choices=("ema", "last"))


class ToyBatches:
    """The dataset's images (resized by nearest neighbour) and labels, order fixed by (seed, epoch)."""

    def __init__(self, ds, size: int, batch_size: int, seed: int):
        import torch

        idx = np.linspace(0, ds.image_size[0] - 1, size).astype(int)
        images = np.stack([ds.read(i)[idx][:, idx] for i in range(len(ds))]).astype(np.float32) / 255.0
        self.x, self.y = torch.from_numpy(images), torch.from_numpy(ds.labels)
        self.batch_size, self.seed = batch_size, seed
        self.steps_per_epoch = max(1, len(ds) // batch_size)

    def epoch(self, epoch: int, start: int = 0):
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.y))
        for k in range(start, self.steps_per_epoch):
            idx = perm[k * self.batch_size:(k + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


class Toy(Generator):
    name = "toy"
    description = "test generator: identity means + learned noise"
    Config = ToyConfig
    SampleOptions = ToyOptions
    presets = {"tiny": {}, "paper": {"steps": 1000, "batch_size": 64}}
    stages = (Stage("mean", description="identity means"), Stage("noise", needs=("mean",), description="noise scale"))

    def plan_stage(self, stage, ctx):
        import torch
        from torch import nn

        from fsbench.train.loop import TrainState, make_ema

        cfg, n = ctx.config, ctx.data.num_identities
        batches = ToyBatches(ctx.data, cfg.size, cfg.batch_size, cfg.seed)
        means = nn.Embedding(n, cfg.size * cfg.size * 3)
        if stage == "mean":
            opt_ = torch.optim.Adam(means.parameters(), lr=cfg.lr)
            state = TrainState(modules={"means": means}, optimizers={"adam": opt_})

            def step(sctx, batch):
                x, y = batch
                loss = (sctx.net("means")(y) - x.flatten(1)).square().mean()
                sctx.backward(loss, "adam")
                return {"loss": loss.detach()}

            return StagePlan(state, step, batches, cfg.steps, cfg.batch_size, extra={"classes": n})
        means.load_state_dict(ctx.load("mean")["modules"]["means"])  # init-from the earlier stage
        means.requires_grad_(False)

        class Scale(nn.Module):  # called, not indexed: DDP wraps what a step calls
            def __init__(self, n: int):
                super().__init__()
                self.scale = nn.Parameter(torch.full((n,), 0.5))

            def forward(self):
                return self.scale

        holder = Scale(cfg.size * cfg.size * 3)
        opt_ = torch.optim.AdamW(holder.parameters(), lr=cfg.lr)
        state = TrainState(modules={"means": means, "noise": holder}, optimizers={"adamw": opt_},
                           ema={"noise": make_ema(holder)}, tensors={"seen": torch.zeros(())})

        def step(sctx, batch):
            x, y = batch
            resid = x.flatten(1) - sctx.net("means")(y)
            loss = (sctx.net("noise")().square() - resid.square()).square().mean()
            sctx.backward(loss, "adamw")
            sctx.update_ema("noise", 0.8)
            sctx.state.tensors["seen"].add_(len(y))
            return {"loss": loss.detach()}

        return StagePlan(state, step, batches, cfg.steps, cfg.batch_size)

    def sampler(self, run, config, options):
        return ToySampler(run, config, options)


class ToySampler(Sampler):
    suffix = ".png"
    batch_size = 3

    def __init__(self, run, config, options):
        state, noise = run.load("mean"), run.load("noise")
        self.means = state["modules"]["means"]["weight"].numpy()
        which = "ema" if options.weights == "ema" else "modules"
        self.scale = noise[which]["noise"]["scale"].numpy()
        self.size, self.noise = config.size, options.noise
        self.info = {"weights": options.weights}

    def identities(self, n_ids, seed):
        if n_ids > len(self.means):
            raise UsageError(f"--ids {n_ids}: this toy run knows {len(self.means)} identities")
        return [Identity(f"toy_{r:03d}", r, {"is_virtual": False}) for r in range(n_ids)]

    def sample(self, keys):
        out = []
        for k in keys:
            z = np.random.default_rng([k.seed, k.row, k.image]).standard_normal(self.scale.shape)
            x = self.means[k.row] + self.noise * np.abs(self.scale) * z
            img = (np.clip(x, 0, 1) * 255).round().astype(np.uint8).reshape(self.size, self.size, 3)
            out.append(Sample(img, {"noise_norm": float(np.linalg.norm(z))}))
        return out


@fsbench.hookimpl
def fsbench_register_generators():
    return [Toy]

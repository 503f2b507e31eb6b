"""VIGFace's two training stages as step functions for fsbench's one training loop.

Stage ``fr`` (Sec. 4.1): ArcFace over n real + k virtual prototypes. Each step draws b virtual
embeddings f'(x_j) = w_v^j + N(0, I) * sigma (Eq. 5) for random virtual ids j, sigma the
per-dimension deviation of the batch's real embeddings from their own prototypes (Eq. 6),
smoothed by Eq. 7 and carried in the checkpoint. Real and virtual embeddings share one loss
(Eq. 3). Both are taken on the unit sphere, where the loss measures them. The virtual
embeddings are built from detached prototypes and a detached sigma: their gradient reaches
the prototypes through the loss's weight matrix only, never the backbone (Fig. 2).

Stage ``diffusion`` (Sec. 4.2): the U-ViT predicts x0 from x_t, conditioned on the frozen
stage-1 embedding c = f_FR(x0) (unit length), zeroed 10 % of the time; loss
||x0_hat - x0||^2 + lambda_id ||f_FR(x0_hat) - f_FR(x0)||^2 (Eq. 2 + Eq. 8); AdamW, EMA.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fsbench import ui
from fsbench.api import StagePlan
from fsbench.generators.vigface.diffusion import CosineSchedule
from fsbench.generators.vigface.uvit import UViT, UViTSize
from fsbench.nn.iresnet import get_model
from fsbench.nn.margin import MarginHead
from fsbench.train.data import TrainBatches, normalize
from fsbench.train.fr import lr_at
from fsbench.train.loop import StepContext, TrainState, make_ema

__all__ = ["build_backbone", "build_uvit", "plan_diffusion", "plan_fr", "prototype_stats"]


def build_backbone(cfg: Any) -> nn.Module:
    return get_model(cfg.fr_network, cfg.fr_embedding_size, 0.0, cfg.fr_input_size, cfg.fr_width)


def build_uvit(cfg: Any) -> UViT:
    return UViT(UViTSize(cfg.image_size, cfg.patch, cfg.width, cfg.depth, cfg.heads, cfg.fr_embedding_size))


def _batches(ctx: Any, batch_size: int, size: int) -> TrainBatches:
    cfg, env = ctx.config, ctx.env
    return TrainBatches(ctx.data, batch_size, size, cfg.seed, env.dist.rank, env.dist.world_size, flip=cfg.flip,
                        cache=cfg.cache_images, workers=cfg.workers, show_progress=ctx.show_progress and env.is_main)


# --------------------------------------------------------------------------- stage fr


@torch.no_grad()
def prototype_stats(weight: torch.Tensor, n_real: int, sample: int = 2000, seed: int = 0) -> dict[str, float]:
    """Fig. 3b: mean and std of the cosines between prototypes, real-real, real-virtual and
    virtual-virtual (distinct pairs; at most `sample` prototypes of each kind, seeded)."""
    g = torch.Generator().manual_seed(seed)
    w = F.normalize(weight.detach().float().cpu(), dim=1)
    real, virt = w[:n_real], w[n_real:]
    real = real[torch.randperm(len(real), generator=g)[:sample]]
    virt = virt[torch.randperm(len(virt), generator=g)[:sample]]
    out = {}
    for name, a, b, same in (("rr", real, real, True), ("rv", real, virt, False), ("vv", virt, virt, True)):
        cos = a @ b.T
        vals = cos[~torch.eye(len(a), len(b), dtype=torch.bool)] if same else cos.flatten()
        out[f"{name}_mean"], out[f"{name}_std"] = float(vals.mean()), float(vals.std())
    return out


def virtual_embeddings(weight: torch.Tensor, sigma: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Eq. 5: w_v^j + N(0, I) * sigma on the unit sphere's scale, no gradient to anything."""
    w = F.normalize(weight.detach().float(), dim=1)[ids]  # (b, D)
    return w + torch.randn_like(w) * sigma.detach()


def fr_step(cfg: Any, n_real: int):
    k = cfg.virtual_ids
    sched = {"lr": cfg.fr_lr, "lr_decay": 0.1, "lr_steps": cfg.fr_lr_steps, "warmup_steps": cfg.fr_warmup_steps}

    def step(ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        images, labels = batch
        lr = lr_at(sched, ctx.step, ctx.steps_per_epoch)
        for group in ctx.state.optimizers["sgd"].param_groups:
            group["lr"] = lr
        x, y = normalize(images.to(ctx.device)), labels.to(ctx.device)
        head: MarginHead = ctx.state.modules["head"]
        with ctx.autocast():
            emb = ctx.net("backbone")(x)  # (b, D)
        emb = emb.float()
        sigma = ctx.state.tensors["sigma"]
        with torch.no_grad():  # Eq. 6 on the unit sphere, then Eq. 7
            dev = F.normalize(emb, dim=1) - F.normalize(head.weight.float(), dim=1)[y]
            sigma.copy_(cfg.sigma_alpha * dev.square().mean(0).sqrt() + (1 - cfg.sigma_alpha) * sigma)
        if cfg.virtual_embeddings:
            j = torch.randint(n_real, n_real + k, (len(y),), device=ctx.device)
            emb_all = torch.cat([emb, virtual_embeddings(head.weight, sigma, j)])  # (2b, D)
            y_all = torch.cat([y, j])
        else:
            emb_all, y_all = emb, y
        logits = ctx.net("head")(emb_all, y_all)  # (2b, n + k): one loss for both (Eq. 3)
        loss = F.cross_entropy(logits, y_all)
        ctx.backward(loss, "sgd")
        out = {"loss": loss.detach(), "acc": (logits[: len(y)].argmax(1) == y).float().mean(), "lr": lr,
               "sigma": float(sigma.mean())}
        if (ctx.step + 1) % cfg.stats_every == 0:
            out.update(prototype_stats(head.weight, n_real))
        return out

    return step


def print_stats(stats: dict[str, float], title: str) -> None:
    rows = [[name, f"{ui.format_number(stats[f'{key}_mean'])} ({ui.format_number(stats[f'{key}_std'])})"]
            for name, key in (("R-R", "rr"), ("R-V", "rv"), ("V-V", "vv"))]
    ui.err.print(ui.table(title, ["prototypes", "cosine mean (std)"], rows))


def plan_fr(ctx: Any) -> StagePlan:
    cfg, n = ctx.config, ctx.data.num_identities
    backbone = build_backbone(cfg).to(ctx.device)
    head = MarginHead(n, cfg.fr_embedding_size, cfg.margin_s, 1.0, cfg.margin_m, 0.0,
                      extra_prototypes=cfg.virtual_ids).to(ctx.device)
    params = [p for m in (backbone, head) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.fr_lr, momentum=cfg.fr_momentum, weight_decay=cfg.fr_weight_decay)
    state = TrainState(modules={"backbone": backbone, "head": head}, optimizers={"sgd": opt},
                       tensors={"sigma": torch.zeros(cfg.fr_embedding_size, device=ctx.device)})
    batches = _batches(ctx, cfg.fr_batch_size, cfg.fr_input_size)

    def finish(st: TrainState) -> None:
        print_stats(prototype_stats(st.modules["head"].weight, n),
                    f"VIGFace Fig. 3b: {n} real + {cfg.virtual_ids} virtual prototypes")

    return StagePlan(state, fr_step(cfg, n), batches, cfg.fr_epochs * batches.steps_per_epoch, cfg.fr_batch_size,
                     extra={"identities": list(ctx.data.identities), "num_real": n, "virtual_ids": cfg.virtual_ids},
                     on_finish=finish)


# --------------------------------------------------------------------------- stage diffusion


def frozen_fr(ctx: Any) -> nn.Module:
    """Stage 1's backbone, eval mode, no gradients to its weights (they are not trained here)."""
    fr = build_backbone(ctx.config)
    fr.load_state_dict(ctx.load("fr")["modules"]["backbone"])
    return fr.to(ctx.device).eval().requires_grad_(False)


def embed(fr: nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
    """Unit FR embeddings of images in [-1, 1] (resized to f_FR's input, differentiably)."""
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return F.normalize(fr(x).float(), dim=1)


def diffusion_step(cfg: Any, fr: nn.Module, schedule: CosineSchedule):
    def step(ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        images, _ = batch
        x0 = normalize(images.to(ctx.device))  # (B, 3, S, S) in [-1, 1]
        with torch.no_grad():
            c = embed(fr, x0, cfg.fr_input_size)  # (B, D)
        keep = (torch.rand(len(x0), 1, device=ctx.device) >= cfg.p_uncond).float()
        t = torch.randint(0, schedule.T, (len(x0),), device=ctx.device)
        xt = schedule.q_sample(x0, t, torch.randn_like(x0))
        with ctx.autocast():
            x0_hat = ctx.net("uvit")(xt, t.float(), c * keep).float()
        loss_x0 = (x0_hat - x0).square().mean()  # Eq. 2
        loss_id = (embed(fr, x0_hat, cfg.fr_input_size) - c).square().sum(1).mean()  # Eq. 8
        loss = loss_x0 + cfg.lambda_id * loss_id
        ctx.backward(loss, "adamw")
        ctx.update_ema("uvit", cfg.ema_decay)
        return {"loss": loss.detach(), "loss_x0": loss_x0.detach(), "loss_id": loss_id.detach()}

    return step


def plan_diffusion(ctx: Any) -> StagePlan:
    cfg = ctx.config
    if cfg.image_size % cfg.patch:
        from fsbench.errors import UsageError

        raise UsageError(f"image_size={cfg.image_size} is not divisible by patch={cfg.patch}")
    uvit = build_uvit(cfg).to(ctx.device)
    opt = torch.optim.AdamW(uvit.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = TrainState(modules={"uvit": uvit}, optimizers={"adamw": opt}, ema={"uvit": make_ema(uvit)})
    if ctx.env.is_main and ctx.show_progress:
        params = sum(p.numel() for p in uvit.parameters())
        flops = 3 * uvit.flops() * cfg.batch_size * cfg.steps  # forward + backward ~ 3 forwards
        ui.err.print(f"U-ViT {params / 1e6:.2f} M parameters, {uvit.flops() / 1e9:.3g} GFLOP a forward; "
                     f"stage 2 is ~{flops:.2g} FLOP ({cfg.steps:,} steps x batch {cfg.batch_size}): "
                     f"{flops / (0.35 * 989e12) / 3600:,.1f} H200-hours at 35 % of bf16 peak")
    return StagePlan(state, diffusion_step(cfg, frozen_fr(ctx), CosineSchedule(cfg.diffusion_steps)),
                     _batches(ctx, cfg.batch_size, cfg.image_size), cfg.steps, cfg.batch_size, amp_dtype="bf16")

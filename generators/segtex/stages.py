"""SegTex's two training stages as step functions for fsbench's one training loop.

Stage ``segmap`` (Sec. III.A): the segmentation-map generator G(skin, hair, mouth) -> 19-class
logits, its crops taken from the same training image as the target map. Eq. 5:
lambda_L1 |softmax(G) - onehot| + lambda_perc L_perc + lambda_adv L_adv, L_adv the
non-saturating BCE of Eq. 4 against a PatchGAN on the map. The perceptual loss compares
VGG-19 features of the maps rendered in CelebAMask-HQ's palette (`segmap_net.render_map`), or,
without VGG-19, the discriminator's features of the soft and the one-hot map.

Stage ``texture`` (Sec. III.B): the texture infusion network T(map, five crops) -> image
against the multiscale discriminator. Eq. 10: lambda_style L_style + lambda_seg L_seg +
lambda_perc L_perc + lambda_L1 L_L1 + lambda_D (least squares + feature matching), L_seg on
the face (every class but the background). Sampling uses an EMA of T.

Each step is one generator update, then one discriminator update, each through its own Adam
("g", "d"; Table 3) and its own loss scaler, so a resumed run restores both exactly. While
the generator's loss is computed, the discriminator's weights take no gradient; the
discriminator then sees real and fake in one forward (SPADE's layout; one forward per
backward keeps DDP simple). The texture stage needs the segmap stage finished (the platform
refuses it otherwise): sampling needs both, and a run is one pair.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fsbench import ui
from fsbench.api import StagePlan
from fsbench.errors import UsageError
from fsbench.generators.segtex.data import CLASSES, RESIZE, SegTexBatches
from fsbench.generators.segtex.losses import (
    VGG_LAYER_WEIGHTS,
    SegmapLossWeights,
    TextureLossWeights,
    VGG19Features,
    bce_d_loss,
    bce_g_loss,
    feature_pair,
    l1_loss,
    lsgan_d_loss,
    multiscale_g_loss,
    perceptual_loss,
    region_mask,
    segmap_total,
    segmentation_loss,
    style_loss,
    texture_total,
)
from fsbench.generators.segtex.segmap_net import SegmapDiscriminator, SegmapGenerator, render_map
from fsbench.generators.segtex.sizes import SIZES, SegTexSize
from fsbench.generators.segtex.texture_net import MultiscaleDiscriminator, TextureNet
from fsbench.hashing import sha256_of
from fsbench.train.data import normalize
from fsbench.train.loop import StepContext, TrainState, make_ema

__all__ = ["PALETTE", "build_segmap", "build_texture", "feature_choice", "onehot", "plan_segmap", "plan_texture",
           "segtex_size"]

# CelebAMask-HQ's colour list (its repository's color_list), class 0 (background) first.
PALETTE = ((0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204), (0, 255, 255),
           (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0), (255, 255, 0), (0, 0, 153), (0, 0, 204),
           (255, 51, 153), (0, 204, 204), (0, 51, 0), (255, 153, 51), (0, 204, 0))
FACE = tuple(range(1, CLASSES))  # Eq. 8's mask: every class but the background


def segtex_size(cfg: Any) -> SegTexSize:
    """The named size (sizes.SIZES) at the config's image_size."""
    base = SIZES[cfg.size]
    try:
        return SegTexSize(dataclasses.replace(base.segmap, image_size=cfg.image_size),
                          dataclasses.replace(base.texture, image_size=cfg.image_size))
    except ValueError as exc:
        raise UsageError(f"-o image_size={cfg.image_size} does not fit size {cfg.size!r}: {exc}") from None


def build_segmap(cfg: Any) -> tuple[SegmapGenerator, SegmapDiscriminator]:
    s = segtex_size(cfg).segmap
    return SegmapGenerator(s), SegmapDiscriminator(s)


def build_texture(cfg: Any) -> tuple[TextureNet, MultiscaleDiscriminator]:
    s = segtex_size(cfg).texture
    return TextureNet(s), MultiscaleDiscriminator(s)


def feature_choice(cfg: Any) -> str:
    """"vgg" or "discriminator": which network the perceptual and style losses use."""
    if cfg.feature_net == "vgg" and not cfg.vgg_path:
        raise UsageError("-o feature_net=vgg needs -o vgg_path=FILE (torchvision's vgg19-dcbb9e9d.pth; "
                         "fsbench never downloads it)")
    if cfg.feature_net == "discriminator" and cfg.vgg_path:
        raise UsageError(f"-o vgg_path={cfg.vgg_path} with -o feature_net=discriminator: drop one of them")
    return "vgg" if cfg.vgg_path else "discriminator"


def _feature_net(ctx: Any) -> tuple[nn.Module | None, dict[str, Any]]:
    """The frozen VGG-19 (or None: the discriminator's features) and what the checkpoint records."""
    if feature_choice(ctx.config) == "discriminator":
        return None, {"feature_net": "discriminator"}
    vgg = VGG19Features.from_file(ctx.config.vgg_path).to(ctx.device)
    return vgg, {"feature_net": "vgg19", "vgg_path": ctx.config.vgg_path,
                 "vgg_sha256": sha256_of(ctx.config.vgg_path)}


def onehot(maps: torch.Tensor) -> torch.Tensor:
    """(B, S, S) class indices -> (B, 19, S, S) float one-hot."""
    return F.one_hot(maps.long(), CLASSES).permute(0, 3, 1, 2).float()


def crops(regions: torch.Tensor) -> list[torch.Tensor]:
    """(B, 5, S, S, 3) uint8 -> five (B, 3, S, S) in [-1, 1]: skin, hair, l_eye, r_eye, mouth."""
    return [normalize(regions[:, k]) for k in range(regions.shape[1])]


def _adam(module: nn.Module, lr: float, cfg: Any) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(cfg.beta1, cfg.beta2))


def _batches(ctx: Any, batch_size: int) -> SegTexBatches:
    cfg, env = ctx.config, ctx.env
    return SegTexBatches(ctx.data, batch_size, cfg.image_size, cfg.seed, env.dist.rank, env.dist.world_size,
                         cache=cfg.cache_images, show_progress=ctx.show_progress and env.is_main)


def _split(outs: list[Any], b: int) -> tuple[list[Any], list[Any]]:
    """A discriminator's output on cat([real, fake]) -> (real's, fake's), nested lists kept."""
    if isinstance(outs, torch.Tensor):
        return outs[:b], outs[b:]
    pairs = [_split(o, b) for o in outs]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _floats(outs: list[Any]) -> list[Any]:
    return [o.float() if isinstance(o, torch.Tensor) else _floats(o) for o in outs]


# --------------------------------------------------------------------------- stage segmap


def segmap_step(cfg: Any, vgg: nn.Module | None):
    weights = SegmapLossWeights(cfg.segmap_l1, cfg.segmap_perc, cfg.segmap_adv)
    palette = torch.tensor(PALETTE, dtype=torch.float32) / 127.5 - 1  # (19, 3) in [-1, 1]

    def step(ctx: StepContext, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        target = onehot(batch["maps"].to(ctx.device))  # (B, 19, S, S)
        skin, hair, _, _, mouth = crops(batch["regions"].to(ctx.device))
        d = ctx.state.modules["discriminator"]
        with ctx.autocast():
            logits = ctx.net("generator")(skin, hair, mouth)  # (B, 19, S, S)
        probs = logits.float().softmax(1)
        d.requires_grad_(False)  # the generator's loss moves the generator only
        with ctx.autocast():
            fake = _floats(d(probs))  # [features..., logits]
        l1 = l1_loss(probs, target)  # Eq. 2
        if vgg is not None:  # Eq. 3 on the maps as images
            pal = palette.to(ctx.device)
            fr, ft = feature_pair(vgg, render_map(probs, pal), render_map(target, pal))
            perc = perceptual_loss(fr, ft)
        else:
            with torch.no_grad(), ctx.autocast():
                real = _floats(d(target))
            perc = perceptual_loss(fake[:-1], real[:-1], [1.0] * (len(fake) - 1))
        adv = bce_g_loss(fake[-1])  # Eq. 4, generator's side
        loss = segmap_total(l1, perc, adv, weights)  # Eq. 5
        ctx.backward(loss, "g")
        d.requires_grad_(True)
        b = len(target)
        with ctx.autocast():
            both = ctx.net("discriminator")(torch.cat([target, probs.detach()]))[-1].float()  # (2B, 1, h, w)
        loss_d = bce_d_loss(both[:b], both[b:])  # Eq. 4, discriminator's side
        ctx.backward(loss_d, "d")
        return {"loss": loss.detach(), "loss_l1": l1.detach(), "loss_perc": perc.detach(), "loss_adv": adv.detach(),
                "loss_d": loss_d.detach(),
                "pixel_acc": (logits.detach().argmax(1) == batch["maps"].to(ctx.device).long()).float().mean()}

    return step


def plan_segmap(ctx: Any) -> StagePlan:
    cfg = ctx.config
    g, d = (m.to(ctx.device) for m in build_segmap(cfg))
    vgg, record = _feature_net(ctx)
    state = TrainState(modules={"generator": g, "discriminator": d},
                       optimizers={"g": _adam(g, cfg.lr, cfg), "d": _adam(d, cfg.lr_d, cfg)})
    batches = _batches(ctx, cfg.segmap_batch_size)
    total = cfg.segmap_epochs * batches.steps_per_epoch
    _announce(ctx, "segmap", g, d, record, total, cfg.segmap_batch_size)
    extra = {**record, "region_size": batches.region_size, "resize": RESIZE, "image_size": cfg.image_size}
    return StagePlan(state, segmap_step(cfg, vgg), batches, total, cfg.segmap_batch_size, extra=extra)


# --------------------------------------------------------------------------- stage texture


def texture_step(cfg: Any, vgg: nn.Module | None):
    weights = TextureLossWeights(cfg.texture_style, cfg.texture_seg, cfg.texture_perc, cfg.texture_l1, cfg.texture_d,
                                 cfg.texture_fm)

    def step(ctx: StepContext, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        x = normalize(batch["images"].to(ctx.device))  # (B, 3, S, S) in [-1, 1]
        seg = onehot(batch["maps"].to(ctx.device))  # (B, 19, S, S)
        parts = crops(batch["regions"].to(ctx.device))
        d = ctx.state.modules["discriminator"]
        with ctx.autocast():
            recon = ctx.net("texture")(seg, *parts).float()  # (B, 3, S, S)
        d.requires_grad_(False)
        with ctx.autocast():
            fake = _floats(d(seg, recon))  # per scale [features..., logits]
            with torch.no_grad():
                real = _floats(d(seg, x))
        if vgg is not None:
            fr, ft = feature_pair(vgg, recon, x)
            layer_weights = VGG_LAYER_WEIGHTS
        else:  # the discriminator's features, every scale's layers but the logits
            fr, ft = [f for s in fake for f in s[:-1]], [f for s in real for f in s[:-1]]
            layer_weights = [1.0] * len(fr)
        perc = perceptual_loss(fr, ft, layer_weights)  # Eq. 3
        style = style_loss(fr, ft)  # Eq. 7
        seg_loss = segmentation_loss(recon, x, region_mask(seg, FACE))  # Eq. 8
        l1 = l1_loss(recon, x)  # Eq. 2
        adv = multiscale_g_loss(real, fake, weights.fm)  # Eq. 9, generator's side
        loss = texture_total(style, seg_loss, perc, l1, adv, weights)  # Eq. 10
        ctx.backward(loss, "g")
        d.requires_grad_(True)
        with ctx.autocast():
            both = _floats(ctx.net("discriminator")(torch.cat([seg, seg]), torch.cat([x, recon.detach()])))
        loss_d = lsgan_d_loss(*_split(both, len(x)))  # Eq. 9, discriminator's side
        ctx.backward(loss_d, "d")
        ctx.update_ema("texture", cfg.ema_decay)
        return {"loss": loss.detach(), "loss_style": style.detach(), "loss_seg": seg_loss.detach(),
                "loss_perc": perc.detach(), "loss_l1": l1.detach(), "loss_adv": adv.detach(), "loss_d": loss_d.detach()}

    return step


def plan_texture(ctx: Any) -> StagePlan:
    cfg = ctx.config
    t, d = (m.to(ctx.device) for m in build_texture(cfg))
    vgg, record = _feature_net(ctx)
    state = TrainState(modules={"texture": t, "discriminator": d},
                       optimizers={"g": _adam(t, cfg.lr, cfg), "d": _adam(d, cfg.lr_d, cfg)},
                       ema={"texture": make_ema(t)})
    batches = _batches(ctx, cfg.texture_batch_size)
    total = cfg.texture_epochs * batches.steps_per_epoch
    _announce(ctx, "texture", t, d, record, total, cfg.texture_batch_size)
    extra = {**record, "region_size": batches.region_size, "resize": RESIZE, "image_size": cfg.image_size}
    return StagePlan(state, texture_step(cfg, vgg), batches, total, cfg.texture_batch_size, extra=extra)


def _announce(ctx: Any, stage: str, g: nn.Module, d: nn.Module, record: dict[str, Any], total: int, batch: int) -> None:
    if not (ctx.env.is_main and ctx.show_progress):
        return
    millions = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (g, d)]
    ui.err.print(f"segtex {stage}: generator {millions[0]:.2f} M, discriminator {millions[1]:.2f} M parameters; "
                 f"{total:,} steps at batch {batch}; perceptual/style features: {record['feature_net']}")

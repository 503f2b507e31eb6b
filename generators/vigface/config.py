"""VIGFace's config (every training knob of both stages) and sampling options, with presets.

The paper (Sec. 5.1) fixes stage 1 (IResNet-50 + ArcFace m 0.5, s 30 on CASIA-WebFace; SGD
0.1, momentum 0.9, wd 5e-4, batch 512, decay at epochs 24/30/36 of 40) and stage 2's frame
(ViT-B U-ViT, patch 4 at 112 px, AdamW 1e-4, batch 512, 5M iterations, DDIM with 100 steps,
cosine schedule). It leaves open: the identity-loss weight lambda_id of Eq. 8, the EMA decay,
AdamW's weight decay and the number of virtual prototypes for CASIA (Fig. 3 uses 60K with
10K real). Our choices are marked "(ours)" below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsbench.api import TrainConfig
from fsbench.options import opt

NETWORKS = ("r4", "r18", "r34", "r50", "r100", "r200")  # fsbench.nn.iresnet.ARCHS, without importing torch


@dataclass(frozen=True)
class VIGFaceConfig(TrainConfig):
    # ---- stage fr: FR model with virtual prototypes (Sec. 4.1, Eq. 3-7)
    fr_network: str = opt("r50", "IResNet depth of f_FR", choices=NETWORKS)
    fr_width: int = opt(64, "IResNet layer-1 planes (64 = standard)", min=4, max=256)
    fr_input_size: int = opt(112, "f_FR's input side in pixels", min=16, max=448)
    fr_embedding_size: int = opt(512, "embedding (and prototype) dimension D", min=2, max=4096)
    fr_batch_size: int = opt(512, "stage-1 global batch b (real images; b virtual embeddings join it)", min=2)
    fr_epochs: int = opt(40, "stage-1 epochs", min=1)
    fr_lr: float = opt(0.1, "SGD learning rate", min=0, min_exclusive=True)
    fr_lr_steps: tuple[int, ...] = opt((24, 30, 36), "epochs at which the lr is multiplied by 0.1", min=0)
    fr_warmup_steps: int = opt(0, "linear lr warm-up steps (ours: 0 in the paper presets)", min=0)
    fr_momentum: float = opt(0.9, "SGD momentum", min=0, max=1, max_exclusive=True)
    fr_weight_decay: float = opt(5e-4, "SGD weight decay", min=0)
    margin_m: float = opt(0.5, "ArcFace additive angular margin m", min=0, max=1.5)
    margin_s: float = opt(30.0, "ArcFace scale s (30 for CASIA-size data, 64 for MS1M)", min=1)
    virtual_ids: int = opt(60_000, "k: virtual prototypes appended to the n real ones (ours for CASIA)", min=1)
    virtual_embeddings: bool = opt(True, "Eq. 5: train virtual prototypes with w_v + N(0, I) sigma (off: ablation)")
    sigma_alpha: float = opt(0.9, "alpha of Eq. 7: sigma = alpha * sigma_batch + (1 - alpha) * sigma_prev", min=0, max=1)
    stats_every: int = opt(500, "steps between Fig. 3b prototype statistics in metrics.jsonl", min=1)
    # ---- stage diffusion: U-ViT with AdaLN on f_FR(x0) (Sec. 4.2, Eq. 8-9)
    image_size: int = opt(112, "generated image side in pixels", min=8, max=512)
    patch: int = opt(4, "U-ViT patch side (image_size must be a multiple)", min=1, max=32)
    width: int = opt(768, "transformer width (ViT-B: 768)", min=8)
    depth: int = opt(13, "blocks: depth // 2 in, 1 mid, depth // 2 out (odd; ViT-B read as U-ViT's 13)", min=1)
    heads: int = opt(12, "attention heads (width must be a multiple)", min=1)
    batch_size: int = opt(512, "stage-2 global batch", min=1)
    steps: int = opt(5_000_000, "stage-2 iterations", min=1)
    lr: float = opt(1e-4, "AdamW learning rate", min=0, min_exclusive=True)
    weight_decay: float = opt(0.0, "AdamW weight decay (ours, as DiT)", min=0)
    ema_decay: float = opt(0.9999, "EMA of the weights sampled from (ours)", min=0, max=1)
    lambda_id: float = opt(0.1, "weight of the identity loss of Eq. 8 (ours)", min=0)
    p_uncond: float = opt(0.1, "share of training steps with the condition zeroed (classifier-free guidance)",
                          min=0, max=1)
    diffusion_steps: int = opt(1000, "T of the cosine schedule", min=2)
    flip: bool = opt(True, "horizontal flips of training images (both stages)")
    workers: int = opt(2, "image decoding processes", min=0)
    cache_images: bool = opt(True, "decode the training set once into memory (small sets)")
    checkpoint_every: int = opt(2000, "steps between checkpoints", min=1)


# Overrides of VIGFaceConfig's defaults (which are the paper's CASIA recipe).
PRESETS: dict[str, dict[str, object]] = {
    "paper": {},
    # The paper's architecture and stage 1, stage 2 cut to 200K iterations at batch 512 (4 % of
    # the paper's 5M): about 5.5e19 FLOPs, some 45 hours of one H200 at 35 % of its bf16 peak.
    "paper-short": {"steps": 200_000},
    # CPU minutes on the embedded world: the FR recipe of fsbench's `tiny` FR preset at 32 px and
    # a 0.83 M-parameter U-ViT (32 px, patch 4, width 96, 5 blocks, 4 heads).
    "tiny": {
        "fr_network": "r4", "fr_width": 8, "fr_input_size": 32, "fr_embedding_size": 128, "fr_batch_size": 64,
        "fr_epochs": 10, "fr_lr_steps": (6, 8), "fr_warmup_steps": 100, "margin_m": 0.3, "virtual_ids": 500,
        "stats_every": 100, "image_size": 32, "patch": 4, "width": 96, "depth": 5, "heads": 4, "batch_size": 64,
        "steps": 6000, "lr": 1e-3, "ema_decay": 0.999, "lambda_id": 0.1, "checkpoint_every": 500,
    },
}


@dataclass(frozen=True)
class VIGFaceOptions:
    ids: Literal["virtual", "real"] = opt("virtual", "virtual: rows of the virtual prototypes (new people); "
                                          "real: prototypes of training identities (augmentation)")
    guidance: float | None = opt(None, "w of Eq. 9 for either kind of identity (overrides the two below)", min=0)
    guidance_virtual: float = opt(2.5, "w of Eq. 9 for virtual identities (Table 1's 2.5)", min=0)
    guidance_real: float = opt(0.5, "w of Eq. 9 for real identities (the paper's 0.5; the embedded "
                               "default ships 1.5, see README)", min=0)
    steps: int = opt(100, "DDIM steps", min=1, max=10_000)
    weights: Literal["ema", "last"] = opt("ema", "which diffusion weights to sample")
    batch_size: int = opt(32, "keys per forward batch (each forward holds 2x: with and without condition)", min=1)
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "auto: CUDA when present, else CPU")

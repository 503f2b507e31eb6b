"""SegTex's config (every training knob of both stages) and sampling options, with presets.

The paper fixes (Sec. IV.A, Table 3): Adam with lr 2e-4 for G and D, betas (0.5, 0.999),
batch 32, 256 px, 35 epochs of the texture network on CelebAMask-HQ. It leaves open: the
loss weights of Eq. 5 and Eq. 10, the segmap stage's length, the EMA of the sampled texture
network and the feature network when VGG-19 cannot be downloaded. Our choices are marked
"(ours)" below; the loss weights' defaults are losses.py's (SegmapLossWeights,
TextureLossWeights).

Perceptual and style losses (Eq. 3, 7) want a pretrained VGG-19. fsbench never downloads:
``-o vgg_path=/models/vgg19-dcbb9e9d.pth`` loads torchvision's file offline; without it the
discriminator's own features serve (`losses.DiscriminatorFeatures`). `feature_net` says which
(``auto``: VGG-19 when vgg_path is given); the resolved choice and the weights' sha256 are
recorded in every checkpoint of the stage (``extra.feature_net``) and in sampled datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsbench.api import TrainConfig
from fsbench.options import opt

SIZE_NAMES = ("paper", "tiny")  # generators.segtex.sizes.SIZES, without importing torch


@dataclass(frozen=True)
class SegTexConfig(TrainConfig):
    # ---- networks (generators/segtex/sizes.py)
    size: str = opt("paper", "network widths by name (sizes.SIZES): paper = Tables 1-2, tiny = CPU scale",
                    choices=SIZE_NAMES)
    image_size: int = opt(256, "side both networks work at; images, maps and region crops are resized to it "
                          "(bilinear-antialias; maps nearest)", min=8, max=1024)
    # ---- optimisation (Table 3), both stages, G and D alike
    lr: float = opt(2e-4, "Adam learning rate of the generators", min=0, min_exclusive=True)
    lr_d: float = opt(2e-4, "Adam learning rate of the discriminators", min=0, min_exclusive=True)
    beta1: float = opt(0.5, "Adam beta1", min=0, max=1, max_exclusive=True)
    beta2: float = opt(0.999, "Adam beta2", min=0, max=1, max_exclusive=True)
    # ---- stage segmap (Sec. III.A, Eq. 1-5)
    segmap_batch_size: int = opt(32, "stage segmap global batch", min=1)
    segmap_epochs: int = opt(35, "stage segmap epochs (ours: the paper gives 35 for the texture network only)", min=1)
    segmap_l1: float = opt(10.0, "lambda_L1 of Eq. 5 (ours)", min=0)
    segmap_perc: float = opt(10.0, "lambda_perc of Eq. 5 (ours)", min=0)
    segmap_adv: float = opt(1.0, "lambda_adv of Eq. 5 (ours; BCE, non-saturating)", min=0)
    # ---- stage texture (Sec. III.B, Eq. 6-10)
    texture_batch_size: int = opt(32, "stage texture global batch", min=1)
    texture_epochs: int = opt(35, "stage texture epochs (Sec. IV.A: 35)", min=1)
    texture_style: float = opt(250.0, "lambda_style of Eq. 10 (ours)", min=0)
    texture_seg: float = opt(10.0, "lambda_seg of Eq. 10 (ours; the mask is every face class)", min=0)
    texture_perc: float = opt(10.0, "lambda_perc of Eq. 10 (ours)", min=0)
    texture_l1: float = opt(1.0, "lambda_L1 of Eq. 10 (ours)", min=0)
    texture_d: float = opt(1.0, "lambda_D of Eq. 10 (ours)", min=0)
    texture_fm: float = opt(10.0, "feature-matching weight inside L_D, over the scales (pix2pixHD)", min=0)
    ema_decay: float = opt(0.999, "EMA of the texture network's weights, which sampling uses (ours)", min=0, max=1)
    # ---- the feature network of the perceptual and style losses
    feature_net: Literal["auto", "vgg", "discriminator"] = opt(
        "auto", "auto: VGG-19 when vgg_path is given, else the discriminator's features (see losses.py)")
    vgg_path: str | None = opt(None, "local torchvision VGG-19 weights (vgg19-dcbb9e9d.pth); never downloaded")
    cache_images: bool = opt(True, "decode images, maps and region crops once into memory (small sets)")
    checkpoint_every: int = opt(1000, "steps between checkpoints", min=1)


# Overrides of SegTexConfig's defaults (which are the paper's recipe).
PRESETS: dict[str, dict[str, object]] = {
    "paper": {},
    # CPU minutes: 32 px (the world made at --size 64 or 112 is resized), the tiny networks
    # (texture network 1.07 M parameters), batch 16; lr 1e-3 for the short schedule. The segmap
    # stage is cheap (0.12 s a step) and small classes come late: at 5 epochs its maps held no
    # eye or lip pixel and the painted faces tied a flat mean-colour painter (judge FD 0.300 vs
    # 0.290); at 30 they beat it (0.193 vs 0.255).
    "tiny": {
        "size": "tiny", "image_size": 32, "segmap_batch_size": 16, "segmap_epochs": 30, "texture_batch_size": 16,
        "texture_epochs": 10, "lr": 1e-3, "lr_d": 1e-3, "ema_decay": 0.99, "checkpoint_every": 200,
    },
}


@dataclass(frozen=True)
class SegTexOptions:
    """``fsbench sample segtex -o KEY=VALUE``: the seven steps' strengths (Sec. III.C)."""

    maps_per_identity: int = opt(10, "step 1: distinct maps per identity (image j uses map j mod this)", min=1)
    map_textures: Literal["identity", "drawn"] = opt(
        "identity", "step 1: identity: the drawn hair and mouth crops shape the map, the identity's own crops "
        "paint it (a new hairstyle, the same hair); drawn: the drawn crops paint it too")
    texture_jitter: float = opt(0.15, "step 2: each region crop's colour gain is drawn in 1 +- this", min=0, max=1)
    pose_max_yaw: float = opt(30.0, "step 4: yaw drawn in +- this many degrees", min=0, max=80)
    pose_max_pitch: float = opt(10.0, "step 4: pitch drawn in +- this many degrees", min=0, max=60)
    pose_depth: float = opt(0.6, "step 4: the face ellipsoid's depth, in half-widths of the image", min=0, max=2)
    refiner_truncation: float = opt(0.6, "step 5 (a plug-in point): the StyleGAN inverter's truncation", min=0, max=1)
    age_min: int = opt(10, "step 6 (a plug-in point): youngest age drawn", min=0, max=120)
    age_max: int = opt(80, "step 6 (a plug-in point): oldest age drawn", min=0, max=120)
    augment_brightness: float = opt(0.1, "step 7: brightness shift in +- this fraction of 255", min=0, max=1)
    augment_contrast: float = opt(0.2, "step 7: contrast factor in 1 +- this", min=0, max=1)
    augment_balance: float = opt(0.1, "step 7: per-channel colour gain in 1 +- this", min=0, max=1)
    augment_blur: float = opt(1.0, "step 7: Gaussian blur sigma in [0, this] pixels", min=0, max=10)
    weights: Literal["ema", "last"] = opt("ema", "which texture-network weights to sample")
    painter: Literal["network", "untrained", "mean_colour"] = opt(
        "network", "step 3's painter: the trained texture network; untrained: the same network at its seeded "
        "initialisation; mean_colour: each class of the map in its region crop's mean colour (the baselines "
        "that show what training adds)")
    textures: str | None = opt(None, "folder (with masks/ and regions/) to draw textures from; default: the run's data")
    batch_size: int = opt(32, "keys per batch through the networks and the steps", min=1)
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "auto: CUDA when present, else CPU")

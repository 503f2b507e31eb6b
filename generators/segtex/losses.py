"""SegTex's losses: Eq. 2-5 (segmentation-map generator) and Eq. 6-10 (texture network).

Every loss is a plain function of tensors (or of feature lists), so one forward pass of a
feature network serves both the perceptual and the style loss:

    fr, ft = feature_pair(vgg, recon, target)      # target's features without a graph
    perc, style = perceptual_loss(fr, ft), style_loss(fr, ft)

Where the paper leaves a choice:
- Perceptual (Eq. 3): the squared error of Eq. 3 (pix2pixHD and SPADE use L1), averaged over
  every element, on VGG-19 relu1_1 ... relu5_1 weighted 1/32, 1/16, 1/8, 1/4, 1 (pix2pixHD).
- Style (Eq. 7): Gram G = F F^T / (C H W) in float32 (under mixed precision the products
  overflow float16), mean squared difference per layer, summed with equal weights.
- Adversarial (Eq. 4): binary cross entropy on logits; the generator minimises
  -log D(G(z)) (Goodfellow's non-saturating form) rather than log(1 - D(G(z))), which gives no
  gradient while D wins.
- Eq. 9 as printed pushes D(recon) to 1 and D(target) to 0 inside one sum with the feature
  matching; we read it as pix2pixHD's least-squares pair: the discriminator minimises
  1/2 mean((D(target) - 1)^2) + 1/2 mean(D(recon)^2) over the scales, the generator
  1/2 mean((D(recon) - 1)^2) + the L1 feature matching (10 / num_D, pix2pixHD / SPADE's
  lambda_feat) over every layer but the logits, the real side detached. That is Eq. 10's L_D.
- Segmentation (Eq. 8): mean(((recon - target) * seg)^2) (recon * seg - target * seg factored);
  `seg` must broadcast to the images: a (B, 1, S, S) region mask, per-pixel class weights, or
  the colour-coded (B, 3, S, S) map Table 2 shows. A one-hot (B, 19, S, S) does not broadcast
  and is refused (summed over classes it is all ones: plain MSE); `region_mask` picks classes.
- Weights: the paper gives none. Our defaults: lambda_L1 1 (segmap: 10), perceptual 10 and
  feature matching 10 (SPADE), style 250 (EdgeConnect's, for this Gram normalisation),
  segmentation 10, adversarial 1. They are starting points, not the paper's values.

VGG-19: `VGG19Features` keeps torchvision's key layout (features.0.weight ...), so
torchvision's vgg19 file loads into it (its classifier and the layers after relu5_1 are
dropped by name); `VGG19Features.from_file` reads it offline with weights_only=True. Where no
VGG-19 file exists, `DiscriminatorFeatures` gives the discriminator's own intermediate
features instead: a learned feature space that moves during training (so the loss is closer
to feature matching than to a fixed perceptual metric; pix2pixHD's --no_vgg_loss relies on
the feature matching alone). Record which one a run used.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fsbench.errors import CheckpointError

__all__ = [
    "VGG_LAYER_WEIGHTS", "DiscriminatorFeatures", "SegmapLossWeights", "TextureLossWeights", "VGG19Features",
    "bce_d_loss", "bce_g_loss", "feature_matching_loss", "feature_pair", "gram", "l1_loss", "lsgan_d_loss",
    "lsgan_g_loss", "multiscale_g_loss", "perceptual_loss", "region_mask", "segmap_total", "segmentation_loss",
    "style_loss", "texture_total",
]

VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # relu1_1 ... relu5_1 (pix2pixHD)
FeatureNet = Callable[[torch.Tensor], list[torch.Tensor]]


# --------------------------------------------------------------------------- reconstruction (Eq. 2, 3, 7, 8)


def l1_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 2: mean |recon - target|."""
    return (recon - target).abs().mean()


def feature_pair(features: FeatureNet, recon: torch.Tensor, target: torch.Tensor) -> tuple[list, list]:
    """features(recon) with its graph, features(target) without (the target is a constant)."""
    with torch.no_grad():
        ft = [f.detach() for f in features(target)]
    return features(recon), ft


def _check_lists(fr: Sequence, ft: Sequence, weights: Sequence[float], what: str) -> None:
    if len(fr) != len(ft) or len(fr) != len(weights):
        raise ValueError(f"{what}: {len(fr)} recon and {len(ft)} target feature maps, {len(weights)} layer weights "
                         f"(pass weights= with one per map, e.g. [1.0] * {len(fr)} for DiscriminatorFeatures)")


def perceptual_loss(fr: Sequence[torch.Tensor], ft: Sequence[torch.Tensor],
                    weights: Sequence[float] = VGG_LAYER_WEIGHTS) -> torch.Tensor:
    """Eq. 3 per layer (squared error averaged over space, channels and batch), weighted sum."""
    _check_lists(fr, ft, weights, "perceptual_loss")
    return sum(w * F.mse_loss(a, b.detach()) for w, a, b in zip(weights, fr, ft))


def gram(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) = F F^T / (C H W), in float32 even under autocast."""
    b, c, h, w = f.shape
    with torch.autocast(f.device.type, enabled=False):
        flat = f.float().reshape(b, c, h * w)
        return flat @ flat.transpose(1, 2) / (c * h * w)


def style_loss(fr: Sequence[torch.Tensor], ft: Sequence[torch.Tensor],
               weights: Sequence[float] | None = None) -> torch.Tensor:
    """Eq. 7 per layer: mean((G(recon) - G(target))^2); summed over layers (equal weights by default)."""
    weights = [1.0] * len(fr) if weights is None else weights
    _check_lists(fr, ft, weights, "style_loss")
    return sum(w * (gram(a) - gram(b.detach())).pow(2).mean() for w, a, b in zip(weights, fr, ft))


def segmentation_loss(recon: torch.Tensor, target: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """Eq. 8: mean((recon * seg - target * seg)^2); seg must broadcast to recon's shape."""
    try:
        shape = torch.broadcast_shapes(recon.shape, seg.shape)
    except RuntimeError:
        shape = None
    if shape != recon.shape:
        raise ValueError(f"segmentation_loss: seg {tuple(seg.shape)} does not broadcast to the images "
                         f"{tuple(recon.shape)}; pass a (B, 1, H, W) mask, e.g. region_mask(onehot, classes)")
    return ((recon - target) * seg).pow(2).mean()


def region_mask(onehot: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """(B, K, H, W) one-hot -> (B, 1, H, W): 1 where the pixel is one of `classes`."""
    return onehot[:, list(classes)].sum(dim=1, keepdim=True)


# --------------------------------------------------------------------------- adversarial (Eq. 4, 9)


def bce_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 4, the discriminator's side: -log D(x) - log(1 - D(G(z))), D = sigmoid(logits)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def bce_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 4, the generator's side, non-saturating: -log D(G(z))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


MultiscaleOut = Sequence[Sequence[torch.Tensor]]  # per scale: [features..., logits]


def lsgan_d_loss(real: MultiscaleOut, fake: MultiscaleOut) -> torch.Tensor:
    """Eq. 9, discriminator: sum over scales of 1/2 mean((D(target) - 1)^2) + 1/2 mean(D(recon)^2)."""
    return sum(0.5 * (r[-1] - 1).pow(2).mean() + 0.5 * f[-1].pow(2).mean() for r, f in zip(real, fake, strict=True))


def lsgan_g_loss(fake: MultiscaleOut) -> torch.Tensor:
    """Eq. 9, generator: sum over scales of 1/2 mean((D(recon) - 1)^2)."""
    return sum(0.5 * (f[-1] - 1).pow(2).mean() for f in fake)


def feature_matching_loss(real: MultiscaleOut, fake: MultiscaleOut, weight: float = 10.0) -> torch.Tensor:
    """Eq. 9's L_fm: weight / num_D * sum over scales and layers (not the logits) of mean |D_l(recon) - D_l(target)|."""
    num_d = len(fake)
    total = fake[0][0].new_zeros(())
    for r, f in zip(real, fake, strict=True):
        for a, b in zip(f[:-1], r[:-1], strict=True):
            total = total + F.l1_loss(a, b.detach()) * (weight / num_d)
    return total


def multiscale_g_loss(real: MultiscaleOut, fake: MultiscaleOut, fm_weight: float = 10.0) -> torch.Tensor:
    """Eq. 10's L_D for the generator: least-squares term + feature matching."""
    return lsgan_g_loss(fake) + feature_matching_loss(real, fake, fm_weight)


# --------------------------------------------------------------------------- totals (Eq. 5, 10)


@dataclass(frozen=True)
class SegmapLossWeights:
    """Eq. 5's lambdas (the paper gives no values)."""

    l1: float = 10.0
    perc: float = 10.0
    adv: float = 1.0


@dataclass(frozen=True)
class TextureLossWeights:
    """Eq. 10's lambdas, and Eq. 9's feature-matching weight (the paper gives no values)."""

    style: float = 250.0
    seg: float = 10.0
    perc: float = 10.0
    l1: float = 1.0
    d: float = 1.0
    fm: float = 10.0  # inside L_D, divided by the number of scales


def segmap_total(l1: torch.Tensor, perc: torch.Tensor, adv: torch.Tensor, weights: SegmapLossWeights) -> torch.Tensor:
    """Eq. 5: lambda_L1 L_L1 + lambda_perc L_perc + lambda_adv L_adv."""
    return weights.l1 * l1 + weights.perc * perc + weights.adv * adv


def texture_total(style: torch.Tensor, seg: torch.Tensor, perc: torch.Tensor, l1: torch.Tensor, d: torch.Tensor,
                  weights: TextureLossWeights) -> torch.Tensor:
    """Eq. 10: lambda_style L_style + lambda_seg L_seg + lambda_perc L_perc + lambda_L1 L_L1 + lambda_D L_D.

    `d` is multiscale_g_loss(real, fake, weights.fm)."""
    return weights.style * style + weights.seg * seg + weights.perc * perc + weights.l1 * l1 + weights.d * d


# --------------------------------------------------------------------------- feature networks


VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)  # to conv5_1
VGG19_TAPS = (1, 6, 11, 20, 29)  # torchvision indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
# keys a torchvision vgg19 file has beyond relu5_1: conv5_2 ... conv5_4 and the classifier
_TORCHVISION_TAIL = re.compile(r"^(features\.(3[0-9])\.|classifier\.)")


class VGG19Features(nn.Module):
    """forward(x (B, 3, H, W) in [-1, 1]) -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1].

    torchvision's vgg19().features[:30], same indices and key names; frozen (no parameter
    takes gradients; the input does). ImageNet normalisation is applied inside. No layer
    behaves differently in training, so train()/eval() change nothing."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in VGG19_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
                channels = v
        self.features = nn.Sequential(*layers)  # indices 0 ... 29, as torchvision's
        # not persistent: the state_dict keeps torchvision's keys exactly
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> ImageNet statistics
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG19_TAPS:
                outs.append(x)
        return outs

    @classmethod
    def from_file(cls, path: str | Path) -> VGG19Features:
        """Load torchvision's vgg19 state_dict (or one with its feature keys) from a local file."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(path, "no such VGG-19 weights file (torchvision's vgg19-dcbb9e9d.pth fits)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else exc.__class__.__name__
            raise CheckpointError(path, f"unreadable or truncated VGG-19 weights ({first[:160]})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(path, "is not a state_dict (a dict of tensors with torchvision's vgg19 keys)")
        state = {k: v for k, v in state.items() if not _TORCHVISION_TAIL.match(k)}
        net = cls()
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())
            raise CheckpointError(path, f"does not fit VGG-19's features ({detail[:200]})") from None
        return net


class DiscriminatorFeatures(nn.Module):
    """The fallback feature network: a discriminator's intermediate features, logits left out.

    forward(*inputs) calls the discriminator and flattens its scales: a MultiscaleDiscriminator
    gives num_d x (d_layers) maps, a SegmapDiscriminator d_layers. Condition on the map with
    functools.partial(DiscriminatorFeatures(d), seg) to get a callable of the image alone. The
    discriminator is not frozen (it is training); the generator's step must not apply the
    gradients this puts on it."""

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        out = self.discriminator(*inputs)
        scales = out if isinstance(out[0], (list, tuple)) else [out]
        return [f for scale in scales for f in scale[:-1]]

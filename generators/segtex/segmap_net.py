"""SegTex's segmentation-map generator (Sec. III.A, Fig. 2, Table 1, Eq. 1), stage `segmap`.

Three encoders read the skin, hair and mouth segment images (RGB, S x S). The hair and mouth
features are concatenated into the style y, and AdaIN (Eq. 1) gives the skin features x their
per-channel mean and deviation:

    AdaIN(x, y) = sigma(y) (x - mu(x)) / sigma(x) + mu(y),  mu, sigma per channel over space.

A decoder turns the result into logits over the 19 CelebAMask-HQ classes.

Where the paper is ambiguous:
- Table 1 gives skin 256, hair 256, mouth 512 channels at 64 x 64, but the text says the skin
  encoder's output is "twice that of the others", and AdaIN needs x and y with the same channels:
  skin 2 * base and hair + mouth = base + base only fit the text. We follow the text (the table
  has skin and mouth swapped).
- sigma is the population deviation sqrt(var + 1e-5) (Huang & Belongie add the same epsilon;
  their code uses the N - 1 variance, which for x and y of the same size changes nothing but
  the epsilon's weight). With it, the output's per-channel statistics are y's (to the epsilon).
- The decoder mirrors the encoders (two k4 s2 p1 transposed convs with BatchNorm and ReLU, as
  pix2pix's decoder), then a 3 x 3 conv to the classes; the paper only says "decoding".
- Eq. 4's discriminator is unconditional D(x): a PatchGAN on the map (softmax probabilities of
  the generated map, the one-hot of a real one). Real one-hots are sharper than any softmax, so
  callers may prefer to feed both through the same soft encoding (e.g. label smoothing).

Shapes: 3 x (B, 3, S, S) -> skin (B, 2c, S/4, S/4), hair, mouth (B, c, S/4, S/4) -> (B, 19, S, S).
"""

from __future__ import annotations

import torch
from torch import nn

from fsbench.generators.segtex.layers import ConvEncoder, PatchDiscriminator, count_flops
from fsbench.generators.segtex.sizes import SegmapSize

__all__ = ["SegmapDiscriminator", "SegmapGenerator", "adain", "render_map"]

EPS = 1e-5


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> per-channel mean and sqrt(var + eps), each (B, C, 1, 1), over space."""
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    return mean, (var + EPS).sqrt()


def adain(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 1: x's per-channel normalised content with y's per-channel mean and deviation."""
    if x.shape[:2] != y.shape[:2]:
        raise ValueError(f"AdaIN needs x and y with the same batch and channels, got {tuple(x.shape)} and {tuple(y.shape)}")
    mu_x, sigma_x = _mean_std(x)
    mu_y, sigma_y = _mean_std(y)
    return sigma_y * (x - mu_x) / sigma_x + mu_y


def render_map(probs: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) class probabilities, (K, 3) colours in [-1, 1] -> (B, 3, H, W) image.

    Differentiable, so an image feature network (VGG-19) can give the map a perceptual loss."""
    return torch.einsum("bkhw,kc->bchw", probs, palette.to(probs.dtype))


class Decoder(nn.Module):
    """(B, 2c, S/4, S/4) -> (B, classes, S, S): two transposed k4 s2 p1 convs, then a 3 x 3 conv."""

    def __init__(self, in_channels: int, classes: int):
        super().__init__()
        mid, low = in_channels // 2, in_channels // 4
        self.net = nn.Sequential(
            nn.ConvTranspose2d(in_channels, mid, 4, stride=2, padding=1, bias=False),  # (B, c, S/2, S/2)
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.ConvTranspose2d(mid, low, 4, stride=2, padding=1, bias=False),  # (B, c/2, S, S)
            nn.BatchNorm2d(low),
            nn.ReLU(),
            nn.Conv2d(low, classes, 3, padding=1),  # (B, classes, S, S) logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SegmapGenerator(nn.Module):
    """forward(skin, hair, mouth) -> (B, classes, S, S) logits; each input (B, 3, S, S) in [-1, 1]."""

    def __init__(self, size: SegmapSize):
        super().__init__()
        self.size = size
        c = size.base
        self.enc_skin = ConvEncoder(size.in_channels, 2 * c)
        self.enc_hair = ConvEncoder(size.in_channels, c)
        self.enc_mouth = ConvEncoder(size.in_channels, c)
        self.decoder = Decoder(2 * c, size.classes)

    def fuse(self, skin: torch.Tensor, hair: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
        """The AdaIN-fused feature map (B, 2c, S/4, S/4), before decoding."""
        x = self.enc_skin(skin)  # (B, 2c, S/4, S/4): the content
        y = torch.cat([self.enc_hair(hair), self.enc_mouth(mouth)], dim=1)  # (B, c + c, S/4, S/4): the style
        return adain(x, y)

    def forward(self, skin: torch.Tensor, hair: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.fuse(skin, hair, mouth))

    def flops(self, batch: int = 1) -> float:
        s = self.size

        def inputs() -> tuple[torch.Tensor, ...]:
            return tuple(torch.empty(batch, s.in_channels, s.image_size, s.image_size) for _ in range(3))

        return count_flops(lambda: SegmapGenerator(s), inputs)


class SegmapDiscriminator(nn.Module):
    """forward(map (B, classes, S, S)) -> [features..., (B, 1, h, w) logits] (Eq. 4's D, as logits).

    pix2pix's 70 x 70 PatchGAN (3 stride-2 convs, then stride 1) with parameter-free BatchNorm."""

    def __init__(self, size: SegmapSize):
        super().__init__()
        self.size = size
        self.net = PatchDiscriminator(size.classes, size.ndf, size.d_layers, norm="batch", spectral=False)

    def forward(self, seg: torch.Tensor) -> list[torch.Tensor]:
        return self.net(seg)

    def flops(self, batch: int = 1) -> float:
        s = self.size
        return count_flops(lambda: SegmapDiscriminator(s),
                           lambda: (torch.empty(batch, s.classes, s.image_size, s.image_size),))

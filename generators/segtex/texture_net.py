"""SegTex's texture infusion network (Sec. III.B, Fig. 3, Table 2, Eq. 6), stage `texture`.

Six encoders read the segmentation map and five texture crops (skin, hair, left eye, right
eye, mouth), each (B, C, S, S) -> (B, E, S/4, S/4) (Table 2: E = 256, S = 256). Then:

- Fusion layer: concatenate map, skin, hair and both eyes, a 3 x 3 conv to 3 channels, gated by
  sigmoid(another 3 x 3 conv of the same input), (B, 5E, ...) -> (B, 3, S/4, S/4).
- Mouth transform: two 3 x 3 convs with BatchNorm and LeakyReLU, (B, E, ...) -> (B, E, ...).
- Mouth fusion layer: the transformed mouth with the map's features, a 1 x 1 conv to 3 channels.
- Blending layer: w_f * fusion + w_m * mouth fusion, (w_f, w_m) = softmax of two trainable
  logits (initialised equal): "evaluates each source's contribution via trainable weights";
  the softmax keeps the generator's input on one scale whatever the weights learn.
- SPADE generator (Park et al. 2019), conditioned on the map y at every block by Eq. 6:
  SPADE(x, y) = gamma(y) * norm(x) + beta(y), norm parameter-free, y nearest-resized to x's
  size, then 3 x 3 conv -> hidden -> ReLU -> separate 3 x 3 convs for gamma and beta.

Where the paper leaves a choice:
- The map is the one-hot (B, 19, S, S) for both its encoder and the SPADE layers (Table 2 shows
  a 3-channel map: a colour-coded map carries the same information with an arbitrary palette;
  the paper's "three classes per channel" reads as SPADE on that 3-channel map, which
  label_nc=3 reproduces).
- gamma: we compute 1 + gamma(y) as SPADE's reference code does. The two parametrise the same
  functions (Eq. 6's gamma is our 1 + gamma), but with 1 + the layer starts near the plain
  normalisation instead of multiplying every activation by a random number near zero.
- Where the blended (B, 3, S/4, S/4) map enters: SPADE's generator starts from its input resized
  to the head's resolution (S / 32 at paper size) and a 3 x 3 conv to 16 ngf; the blended map
  takes the place of SPADE's downsampled segmentation map there. We resize by area averaging
  (SPADE resizes its map nearest; for texture features that would alias).
- As in SPADE: the shortcut of a width-changing block is SPADE -> 1 x 1 conv without bias; the
  image head is LeakyReLU(0.2) -> 3 x 3 conv -> tanh; spectral norm on the residual convs and
  the discriminator's; parameter-free BatchNorm inside SPADE; 2 x 2 discriminator scales.

Shapes (paper): 6 x (B, 19 | 3, 256, 256) -> 6 x (B, 256, 64, 64) -> (B, 3, 64, 64) blended
-> (B, 3, 8, 8) -> (B, 1024, 8, 8) -> ... -> (B, 64, 256, 256) -> (B, 3, 256, 256).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fsbench.generators.segtex.layers import ConvEncoder, PatchDiscriminator, count_flops, maybe_spectral
from fsbench.generators.segtex.sizes import TextureSize

__all__ = ["SPADE", "MultiscaleDiscriminator", "SPADEGenerator", "SPADEResBlock", "TextureNet"]

SOURCES = ("map", "skin", "hair", "left_eye", "right_eye", "mouth")


# --------------------------------------------------------------------------- SPADE (Eq. 6)


class SPADE(nn.Module):
    """forward(x (B, C, H, W), seg (B, L, S, S)) -> (1 + gamma(seg)) * norm(x) + beta(seg)."""

    def __init__(self, channels: int, label_nc: int, hidden: int, norm: str = "batch"):
        super().__init__()
        # parameter-free: the map alone decides the scale and shift (Eq. 6)
        self.norm = nn.BatchNorm2d(channels, affine=False) if norm == "batch" else nn.InstanceNorm2d(channels)
        self.shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")  # (B, L, H, W): labels stay labels
        h = self.shared(seg)  # (B, hidden, H, W)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEResBlock(nn.Module):
    """x + [SPADE -> LeakyReLU(0.2) -> 3 x 3 conv] x 2; a learned SPADE -> 1 x 1 shortcut if widths differ."""

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int, norm: str = "batch", spectral: bool = True):
        super().__init__()
        mid = min(fin, fout)
        self.norm_0 = SPADE(fin, label_nc, hidden, norm)
        self.conv_0 = maybe_spectral(nn.Conv2d(fin, mid, 3, padding=1), spectral)
        self.norm_1 = SPADE(mid, label_nc, hidden, norm)
        self.conv_1 = maybe_spectral(nn.Conv2d(mid, fout, 3, padding=1), spectral)
        self.shortcut = None
        if fin != fout:
            self.norm_s = SPADE(fin, label_nc, hidden, norm)
            self.shortcut = maybe_spectral(nn.Conv2d(fin, fout, 1, bias=False), spectral)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(self.norm_s(x, seg))
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))  # (B, mid, H, W)
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))  # (B, fout, H, W)
        return skip + dx


class SPADEGenerator(nn.Module):
    """forward(x (B, Cin, h, w), seg (B, L, S, S)) -> (B, 3, S, S) in [-1, 1].

    SPADE's layout: a 3 x 3 conv of x resized to S / 2^n_up, the head block, (nearest x2, the
    middle blocks), then nearest x2 before each remaining block, LeakyReLU -> 3 x 3 conv -> tanh."""

    def __init__(self, size: TextureSize, in_channels: int | None = None):
        super().__init__()
        s = size
        self.size = size
        widths = [m * s.ngf for m in s.spade_mults]

        def block(fin: int, fout: int) -> SPADEResBlock:
            return SPADEResBlock(fin, fout, s.label_nc, s.spade_hidden, s.spade_norm, s.spectral)

        self.fc = nn.Conv2d(s.fuse_channels if in_channels is None else in_channels, widths[0], 3, padding=1)
        self.head = block(widths[0], widths[0])
        self.middle = nn.ModuleList(block(widths[0], widths[0]) for _ in range(s.spade_middle))
        self.ups = nn.ModuleList(block(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.to_image = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        start = self.size.start
        x = F.interpolate(x, size=(start, start), mode="area")  # (B, Cin, S/2^n, S/2^n)
        x = self.head(self.fc(x), seg)  # (B, w0, S/2^n, S/2^n)
        if len(self.middle):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            for block in self.middle:
                x = block(x, seg)
        for block in self.ups:
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), seg)  # doubles the resolution
        return torch.tanh(self.to_image(F.leaky_relu(x, 0.2)))  # (B, 3, S, S)

    def flops(self, batch: int = 1) -> float:
        s, h = self.size, self.size.image_size // 4  # the blended map's size, as TextureNet feeds it
        return count_flops(lambda: SPADEGenerator(s, self.fc.in_channels),
                           lambda: (torch.empty(batch, self.fc.in_channels, h, h),
                                    torch.empty(batch, s.label_nc, s.image_size, s.image_size)))


# --------------------------------------------------------------------------- fusion and blending


class FusionLayer(nn.Module):
    """(B, n E, h, w) concatenated features -> (B, out, h, w) = conv(f) * sigmoid(gate(f))."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.gate = nn.Conv2d(in_channels, out_channels, 3, padding=1)  # how much of each pixel passes

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.conv(f) * torch.sigmoid(self.gate(f))


class MouthTransform(nn.Module):
    """(B, E, h, w) -> (B, E, h, w): [3 x 3 conv -> BatchNorm -> LeakyReLU(0.2)] x 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BlendingLayer(nn.Module):
    """Sources (each (B, C, h, w)) -> sum_i w_i source_i, w = softmax(trainable logits)."""

    def __init__(self, n_sources: int = 2):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_sources))  # equal shares at the start

    @property
    def weights(self) -> torch.Tensor:
        return self.logits.softmax(0)

    def forward(self, *sources: torch.Tensor) -> torch.Tensor:
        w = self.weights
        return sum(wi * s for wi, s in zip(w, sources, strict=True))


# --------------------------------------------------------------------------- the network


class TextureNet(nn.Module):
    """forward(seg, skin, hair, left_eye, right_eye, mouth) -> (B, 3, S, S) in [-1, 1].

    seg is the map (B, label_nc, S, S) (one-hot, float); the crops are (B, 3, S, S) in [-1, 1]."""

    def __init__(self, size: TextureSize):
        super().__init__()
        s = size
        self.size = size
        self.encoders = nn.ModuleDict(
            {name: ConvEncoder(s.label_nc if name == "map" else 3, s.enc_width) for name in SOURCES}
        )
        self.fusion = FusionLayer(5 * s.enc_width, s.fuse_channels)
        self.mouth_transform = MouthTransform(s.enc_width)
        self.mouth_fusion = nn.Conv2d(2 * s.enc_width, s.fuse_channels, 1)
        self.blend = BlendingLayer(2)
        self.generator = SPADEGenerator(s)

    def blended(self, seg: torch.Tensor, skin: torch.Tensor, hair: torch.Tensor, left_eye: torch.Tensor,
                right_eye: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
        """The generator's input (B, fuse_channels, S/4, S/4)."""
        f = {name: self.encoders[name](x) for name, x in zip(SOURCES, (seg, skin, hair, left_eye, right_eye, mouth))}
        fused = self.fusion(torch.cat([f[n] for n in SOURCES[:5]], dim=1))  # (B, 5E, S/4, S/4) -> (B, 3, S/4, S/4)
        m = self.mouth_transform(f["mouth"])  # (B, E, S/4, S/4)
        mouth_fused = self.mouth_fusion(torch.cat([m, f["map"]], dim=1))  # (B, 2E, ...) -> (B, 3, S/4, S/4)
        return self.blend(fused, mouth_fused)

    def forward(self, seg: torch.Tensor, skin: torch.Tensor, hair: torch.Tensor, left_eye: torch.Tensor,
                right_eye: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
        return self.generator(self.blended(seg, skin, hair, left_eye, right_eye, mouth), seg)

    def flops(self, batch: int = 1) -> float:
        s = self.size

        def inputs() -> tuple[torch.Tensor, ...]:
            seg = torch.empty(batch, s.label_nc, s.image_size, s.image_size)
            return (seg, *(torch.empty(batch, 3, s.image_size, s.image_size) for _ in range(5)))

        return count_flops(lambda: TextureNet(s), inputs)


class MultiscaleDiscriminator(nn.Module):
    """forward(seg, image) -> one list per scale of [features..., (B, 1, h, w) logits].

    The input is the map concatenated with the image; scale i + 1 sees scale i's input
    average-pooled 3 x 3, stride 2 (pix2pixHD / SPADE)."""

    def __init__(self, size: TextureSize):
        super().__init__()
        s = size
        self.size = size
        self.scales = nn.ModuleList(
            PatchDiscriminator(s.label_nc + 3, s.ndf, s.d_layers, norm="instance", spectral=s.spectral)
            for _ in range(s.num_d)
        )

    def forward(self, seg: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        x = torch.cat([seg, image], dim=1)  # (B, L + 3, S, S)
        outs = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)  # (B, L + 3, S/2^i, ...)
            outs.append(d(x))
        return outs

    def flops(self, batch: int = 1) -> float:
        s = self.size
        return count_flops(lambda: MultiscaleDiscriminator(s),
                           lambda: (torch.empty(batch, s.label_nc, s.image_size, s.image_size),
                                    torch.empty(batch, 3, s.image_size, s.image_size)))

"""Pieces both SegTex networks use: the two-conv encoder, the PatchGAN and a FLOP counter.

- `ConvEncoder` is Sec. IV.A.2's encoder: two k4 s2 p1 convolutions, each followed by
  BatchNorm and LeakyReLU(0.2), so (B, C, S, S) -> (B, out, S / 4, S / 4) (Table 2: 3 x 256^2 ->
  256 x 64^2). The paper does not give the hidden width; we take out // 2.
- `PatchDiscriminator` is SPADE's NLayerDiscriminator (pix2pix's PatchGAN): 4 x 4 convs,
  padding 2, widths 64 -> 128 -> 256 at stride 2, 512 at stride 1, then 1 channel, LeakyReLU(0.2).
  It returns every block's output, the last being the patch logits, for feature matching.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ConvEncoder", "PatchDiscriminator", "count_flops", "maybe_spectral"]


def maybe_spectral(layer: nn.Module, on: bool) -> nn.Module:
    return spectral_norm(layer) if on else layer


class ConvEncoder(nn.Module):
    """(B, C, S, S) -> (B, out, S / 4, S / 4): [conv k4 s2 p1 -> BatchNorm -> LeakyReLU(0.2)] x 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        hidden = out_channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 4, stride=2, padding=1),  # (B, out / 2, S / 2, S / 2)
            nn.BatchNorm2d(hidden),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, out_channels, 4, stride=2, padding=1),  # (B, out, S / 4, S / 4)
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """forward(x) -> [block outputs]: n_layers feature maps, then (B, 1, h, w) patch logits.

    `norm` follows the first conv's successors ("instance": SPADE; "batch": pix2pix); a conv
    that a norm follows has no bias (it would be subtracted away), as in SPADE."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 4, norm: str = "instance",
                 spectral: bool = True):
        super().__init__()
        if norm not in ("instance", "batch"):
            raise ValueError(f"discriminator norm {norm!r}: choose 'instance' or 'batch'")
        kw, pad = 4, math.ceil((4 - 1) / 2)  # SPADE's padw = 2: the map grows by one at stride 1
        blocks = [nn.Sequential(nn.Conv2d(in_channels, ndf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2))]
        width = ndf
        for n in range(1, n_layers):
            prev, width = width, min(width * 2, ndf * 8)
            stride = 1 if n == n_layers - 1 else 2  # the last hidden conv keeps the resolution
            conv = maybe_spectral(nn.Conv2d(prev, width, kw, stride=stride, padding=pad, bias=False), spectral)
            normed = nn.InstanceNorm2d(width) if norm == "instance" else nn.BatchNorm2d(width, affine=False)
            blocks.append(nn.Sequential(conv, normed, nn.LeakyReLU(0.2)))
        blocks.append(nn.Sequential(nn.Conv2d(width, 1, kw, stride=1, padding=pad)))  # patch logits
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


def count_flops(build: Callable[[], nn.Module], inputs: Callable[[], tuple[torch.Tensor, ...]]) -> float:
    """FLOPs (2 x multiply-adds of convolutions and matrix products) of one forward pass.

    The network is rebuilt on the meta device, so no memory is allocated and nothing is
    computed: a paper-size count costs milliseconds. Norms and activations are not counted
    (under 1 % of a convolutional network's work)."""
    with torch.device("meta"):
        net = build()
        args = inputs()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(*args)
    return float(counter.get_total_flops())

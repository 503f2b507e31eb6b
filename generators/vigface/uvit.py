"""U-ViT (Bao et al. 2023) with VIGFace's AdaLN conditioning (Sec. 4.2), one class per block.

Every input is a token: the diffusion time (its sinusoids, as U-ViT without its optional time
MLP), then the image's p x p patches; one learned
positional embedding covers them all. The blocks are pre-norm ViT blocks laid out as a U:
depth // 2 in-blocks, a mid-block, depth // 2 out-blocks, each out-block first concatenating
its input with the matching in-block's output (shallowest with deepest) and mapping 2D -> D.

Conditioning (VIGFace): every LayerNorm is AdaLN(h, c) = f_s(c) * LayerNorm(h) + f_b(c), with
c = MLP(time) + Linear(FR embedding) and f_s, f_b linear in SiLU(c). We write f_s = 1 + scale
and zero-initialise the projection (DiT's trick without its gates), so each block starts as
a plain pre-norm block. Dropping the condition (classifier-free guidance) zeroes the FR
embedding, as the paper does.

Shapes: x (B, C, S, S) -> tokens (B, 1 + L, D) with L = (S / p)^2 -> (B, C, S, S) x0-prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["UViT", "UViTSize", "timestep_embedding"]


@dataclass(frozen=True)
class UViTSize:
    image_size: int
    patch: int
    width: int
    depth: int  # blocks in all: depth // 2 in, 1 mid, depth // 2 out (odd)
    heads: int
    cond_dim: int  # the FR embedding's size
    channels: int = 3
    mlp_ratio: float = 4.0


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(B,) float timesteps -> (B, dim) sinusoids (DiT's / ADM's frequencies)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


# --------------------------------------------------------------------------- blocks


class PatchEmbed(nn.Module):
    """(B, C, S, S) -> (B, L, D): a p x p, stride-p convolution."""

    def __init__(self, channels: int, width: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, width, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention, qkv without bias (U-ViT)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, d/H)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, d/H)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, width: int, ratio: float):
        super().__init__()
        hidden = int(width * ratio)
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class AdaLNBlock(nn.Module):
    """Pre-norm ViT block whose two LayerNorms are AdaLN(h, c) = (1 + scale(c)) LN(h) + shift(c).

    `skip` (out-blocks only): concatenate the matching in-block's output, 2D -> D, first."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, skip: bool = False):
        super().__init__()
        self.skip = nn.Linear(2 * width, width) if skip else None
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(width, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 4 * width))  # -> shift1, scale1, shift2, scale2
        nn.init.zeros_(self.ada[1].weight)  # zero: the block starts unconditioned (identity AdaLN)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip is not None:
            x = self.skip(torch.cat([x, skip], dim=-1))  # (B, N, 2D) -> (B, N, D)
        shift1, scale1, shift2, scale2 = self.ada(c)[:, None].chunk(4, dim=-1)  # 4 x (B, 1, D)
        x = x + self.attn(self.norm1(x) * (1 + scale1) + shift1)
        return x + self.mlp(self.norm2(x) * (1 + scale2) + shift2)


# --------------------------------------------------------------------------- the network


class UViT(nn.Module):
    """x0-prediction network: forward(x_t, t, cond) -> x0_hat, cond (B, cond_dim) or zeros."""

    def __init__(self, size: UViTSize):
        super().__init__()
        if size.image_size % size.patch:
            raise ValueError(f"image_size {size.image_size} is not divisible by patch {size.patch}")
        if size.depth % 2 == 0 or size.depth < 1:
            raise ValueError(f"depth {size.depth}: U-ViT needs an odd number of blocks (in + mid + out)")
        if size.width % size.heads:
            raise ValueError(f"width {size.width} is not divisible by heads {size.heads}")
        self.size = size
        d, half = size.width, size.depth // 2
        self.tokens = (size.image_size // size.patch) ** 2
        self.patch_embed = PatchEmbed(size.channels, d, size.patch)
        self.time_cond = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))  # time's part of c
        self.cond_proj = nn.Linear(size.cond_dim, d)  # the FR embedding's part of c
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.tokens, d))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.in_blocks = nn.ModuleList(AdaLNBlock(d, size.heads, size.mlp_ratio) for _ in range(half))
        self.mid_block = AdaLNBlock(d, size.heads, size.mlp_ratio)
        self.out_blocks = nn.ModuleList(AdaLNBlock(d, size.heads, size.mlp_ratio, skip=True) for _ in range(half))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, size.patch * size.patch * size.channels)
        self.final_conv = nn.Conv2d(size.channels, size.channels, 3, padding=1)
        self.apply(_init_linear)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s = self.size
        temb = timestep_embedding(t, s.width)  # (B, D)
        h = torch.cat([temb[:, None], self.patch_embed(x)], dim=1) + self.pos_embed  # (B, 1 + L, D): time token first
        c = self.time_cond(temb) + self.cond_proj(cond)  # (B, D)
        skips = []
        for block in self.in_blocks:
            h = block(h, c)
            skips.append(h)
        h = self.mid_block(h, c)
        for block in self.out_blocks:
            h = block(h, c, skips.pop())  # the deepest in-block meets the shallowest out-block
        h = self.head(self.norm(h))[:, 1:]  # (B, L, p*p*C), time token dropped
        g, p = s.image_size // s.patch, s.patch
        h = h.reshape(-1, g, g, p, p, s.channels).permute(0, 5, 1, 3, 2, 4).reshape(-1, s.channels, g * p, g * p)
        return self.final_conv(h)  # (B, C, S, S)

    def flops(self) -> float:
        """Multiply-adds x 2 of one forward pass (linear layers and attention), for the benchmark."""
        s, n, d = self.size, 1 + self.tokens, self.size.width
        per_block = 2 * n * (3 * d * d + d * d + 2 * d * int(d * s.mlp_ratio)) + 2 * 2 * n * n * d
        blocks = s.depth * per_block + (s.depth // 2) * 2 * n * 2 * d * d
        io = 2 * self.tokens * (s.channels * s.patch**2 * d) * 2
        return float(blocks + io)


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear) and m.weight.requires_grad and not _is_zeroed(m):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _is_zeroed(m: nn.Linear) -> bool:
    return bool((m.weight == 0).all())

"""Gaussian diffusion as VIGFace uses it: cosine schedule, x0-prediction, DDIM with guidance.

- Schedule (Nichol & Dhariwal): alpha_bar(t) = f(t) / f(0), f(t) = cos(((t / T) + s) / (1 + s) * pi / 2)^2,
  s = 0.008, betas clipped at 0.999.
- Training target (Eq. 2): the network predicts x0 from x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps.
- DDIM (eta = 0) from t to t' < t: eps = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t);
  x_t' = sqrt(ab_t') x0_hat + sqrt(1 - ab_t') eps; the last step returns x0_hat.
- Guidance exactly as Eq. 9: x0 = w * x0(x_t, t, c) + (1 - w) * x0(x_t, t, 0), the conditional
  and unconditional predictions from one batched forward of 2B rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["CosineSchedule", "ddim_sample"]


class CosineSchedule:
    def __init__(self, steps: int = 1000, s: float = 0.008):
        self.T = steps
        f = np.cos(((np.arange(steps + 1) / steps) + s) / (1 + s) * math.pi / 2) ** 2
        betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
        self.alpha_bar = torch.from_numpy(np.cumprod(1 - betas)).float()  # (T,): alpha_bar of steps 1..T

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t given x0, (B,) integer t in [0, T) and the noise."""
        ab = self.alpha_bar.to(x0.device)[t].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def timesteps(self, n: int) -> list[int]:
        """n DDIM steps from T - 1 down to 0, evenly spaced (n <= T)."""
        return sorted({int(round(x)) for x in np.linspace(self.T - 1, 0, n)}, reverse=True)


@torch.no_grad()
def ddim_sample(model: torch.nn.Module, schedule: CosineSchedule, noise: torch.Tensor, cond: torch.Tensor,
                guidance: float, steps: int, autocast=None) -> torch.Tensor:
    """x_T = `noise` (B, C, S, S) -> x0 in [-1, 1], conditioned on `cond` (B, D) with guidance w."""
    x = noise
    null = torch.zeros_like(cond)
    ts = schedule.timesteps(steps)
    ab = schedule.alpha_bar.to(noise.device)
    for i, t in enumerate(ts):
        tt = torch.full((2 * len(x),), float(t), device=x.device)
        if autocast is not None:
            with autocast():
                both = model(torch.cat([x, x]), tt, torch.cat([cond, null])).float()  # (2B, C, S, S)
        else:
            both = model(torch.cat([x, x]), tt, torch.cat([cond, null]))
        x0_c, x0_u = both.chunk(2)
        x0 = (guidance * x0_c + (1 - guidance) * x0_u).clamp(-1, 1)  # Eq. 9
        if i == len(ts) - 1:
            return x0
        a_t, a_prev = ab[t], ab[ts[i + 1]]
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x

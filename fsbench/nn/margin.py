"""Margin-based classification heads for face recognition (arcface_torch's "combined margin").

The head holds one prototype per class and turns embeddings into logits: the cosine between
the normalised embedding and each normalised prototype, clamped to [-1, 1], scaled by `s`; on
the target class only, cos(theta) becomes cos(m1 * theta + m2) - m3. ArcFace is (1, 0.5, 0),
CosFace (1, 0, 0.4), and (1, 0, 0) is a plain (normalised) softmax.

Extra prototypes: a generator may need classes that own no training images (VIGFace's stage 1
adds k "virtual" prototypes). They are simply more rows of the same weight matrix, appended
after the real classes, so labels n .. n + k - 1 address them; the caller decides what
embeddings to pair with them. Nothing here knows about VIGFace.

Unlike arcface_torch, which edits the target logit under ``no_grad`` (so the margin's angle
transform gets an identity gradient), the margin here is differentiated exactly. With m1 = 1 the
target uses cos(t + m2) = cos t cos m2 - sin t sin m2 (finite gradient at cos t = +-1); other
m1 take arccos of cosines kept a hair inside [-1, 1].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["MARGINS", "LinearHead", "MarginHead", "margin_logits"]

# name -> (m1, m2, m3), the combined-margin parameters.
MARGINS: dict[str, tuple[float, float, float]] = {
    "arcface": (1.0, 0.5, 0.0),
    "cosface": (1.0, 0.0, 0.4),
    "softmax": (1.0, 0.0, 0.0),
}

_ACOS_EPS = 1e-7
_SIN_EPS = 1e-12


def margin_logits(cosine: Tensor, labels: Tensor, s: float, m1: float, m2: float, m3: float) -> Tensor:
    """(N, C) cosines, (N,) labels -> (N, C) logits s * cos, target: s * (cos(m1 t + m2) - m3).

    A label of -1 means "no target in this head" (all logits are plain scaled cosines).
    """
    if m1 == 1.0 and m2 == 0.0 and m3 == 0.0:
        return cosine * s
    rows = torch.nonzero(labels >= 0, as_tuple=True)[0]
    cols = labels[rows]
    target = cosine[rows, cols]
    if m1 == 1.0 and m2 != 0.0:
        # cos(t + m2) = cos t cos m2 - sin t sin m2; sin t >= 0 for t in [0, pi]. Exact at
        # cos t = +-1, where arccos would need clamping (and an infinite gradient).
        sin = torch.sqrt((1.0 - target * target).clamp_min(_SIN_EPS))
        target = target * math.cos(m2) - sin * math.sin(m2)
    elif m1 != 1.0:
        theta = torch.acos(target.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS))
        target = torch.cos(m1 * theta + m2)
    target = target - m3
    logits = cosine.index_put((rows, cols), target.to(cosine.dtype))  # out of place: autograd-safe
    return logits * s


class MarginHead(nn.Module):
    """Prototypes W (num_classes + extra_prototypes, dim) and the combined margin.

    `forward(embeddings, labels)` returns the scaled logits for cross-entropy; `cosine`
    returns the clamped cosines alone (for evaluation or prototype analysis).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        extra_prototypes: int = 0,
    ):
        super().__init__()
        if num_classes < 1 or dim < 1 or extra_prototypes < 0:
            raise ValueError(f"MarginHead needs num_classes>=1, dim>=1, extra>=0; got {num_classes}, {dim}, {extra_prototypes}")
        self.num_classes = num_classes
        self.dim = dim
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.weight = nn.Parameter(torch.empty(num_classes + extra_prototypes, dim))
        nn.init.normal_(self.weight, std=0.01)

    @classmethod
    def named(cls, kind: str, num_classes: int, dim: int, s: float = 64.0, extra_prototypes: int = 0) -> MarginHead:
        """`kind` is one of MARGINS (arcface, cosface, softmax)."""
        from fsbench.errors import UsageError

        if kind not in MARGINS:
            raise UsageError(f"unknown margin {kind!r} (known: {', '.join(MARGINS)})")
        return cls(num_classes, dim, s, *MARGINS[kind], extra_prototypes=extra_prototypes)

    @property
    def extra_prototypes(self) -> int:
        return self.weight.shape[0] - self.num_classes

    @property
    def extra_labels(self) -> range:
        """Labels addressing the extra (image-less) prototypes."""
        return range(self.num_classes, self.weight.shape[0])

    def add_prototypes(self, k: int, init: Tensor | None = None) -> range:
        """Append k prototypes (rows of W); returns their labels.

        `init` (k, dim) sets them, else N(0, 0.01) like the rest. Call before building the
        optimiser: the parameter object is replaced.
        """
        if k < 1:
            raise ValueError(f"add_prototypes needs k >= 1, got {k}")
        if init is None:
            init = torch.randn(k, self.dim, device=self.weight.device) * 0.01
        if tuple(init.shape) != (k, self.dim):
            raise ValueError(f"add_prototypes: init has shape {tuple(init.shape)}, expected {(k, self.dim)}")
        start = self.weight.shape[0]
        self.weight = nn.Parameter(torch.cat([self.weight.detach(), init.to(self.weight)], 0))
        return range(start, start + k)

    def cosine(self, embeddings: Tensor) -> Tensor:
        """(N, dim) -> (N, C + k) cosines in [-1, 1], in float32 even under AMP autocast."""
        with torch.autocast(embeddings.device.type, enabled=False):
            e = nn.functional.normalize(embeddings.float(), dim=1)
            w = nn.functional.normalize(self.weight.float(), dim=1)
            return (e @ w.t()).clamp(-1.0, 1.0)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return margin_logits(self.cosine(embeddings), labels, self.s, self.m1, self.m2, self.m3)

    def extra_repr(self) -> str:
        return (
            f"classes={self.num_classes}, extra={self.extra_prototypes}, dim={self.dim}, "
            f"s={self.s}, m=({self.m1}, {self.m2}, {self.m3})"
        )



class LinearHead(nn.Module):
    """A plain linear classifier with bias: the "softmax" of SegTex's classification protocol.

    Same call as MarginHead (labels are accepted and ignored) so one training loop drives both.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            return self.fc(embeddings.float())

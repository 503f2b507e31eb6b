"""Per-pixel building blocks of the renderer's layer kernels (compiled with numba).

A layer of the scene is one compiled loop over the pixel window it can reach, doing the
whole layer's arithmetic per pixel in registers: numpy would need a temporary array and a
Python call per operation, and at 112 px those calls, not the arithmetic, were the cost.
The helpers below are small enough that LLVM inlines them into every kernel.

Conventions shared by all kernels:

- the canvas is the tuple ``(albedo, normal, label, lit, pu, pv, hx, hy, front, depth)``
  (see `render._Camera`): albedo and normal are (3, size, size) float32 planes (rows of one
  channel are contiguous, so the compiler can vectorise whole-image passes), label uint8
  class indices, the rest (size, size) float32;
- a surface (ellipsoid seen by the camera) is a float64 vector of `SURFACE` coefficients
  made by `render.surface`: the ray-cast quadratic, then the 3x4 normal matrix;
- arithmetic is float64 (Python floats are), storage float32; except in the float32 row
  passes at the end of this file, which the layers covering most pixels use.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

# Every kernel: cached on disk (compiled once per machine), no GIL, numpy's division
# semantics (no ZeroDivisionError checks in the inner loops). Of fastmath, only the flags
# that change no finite result (no NaN or inf to care about): with contraction into FMAs,
# reassociation or reciprocals the compiler's choices depend on what it inlined, and a
# kernel compiled in this process then gave other last bits than the same kernel loaded
# from the cache, so the same seed gave other bytes after a fresh compile.
kernel = njit(cache=True, nogil=True, error_model="numpy", fastmath={"nnan", "ninf"})

SURFACE = 23  # 11 ray-cast coefficients + a 3x4 normal matrix


@kernel
def clip01(v: float) -> float:
    return min(max(v, 0.0), 1.0)


@kernel
def soft(d: float, px: float) -> float:
    """Coverage from a signed distance (negative inside), about one pixel `px` of anti-aliasing."""
    return clip01(0.5 - d / px)


@kernel
def ellipse(x: float, y: float, cx: float, cy: float, rx: float, ry: float, px: float) -> float:
    """Coverage of an axis-aligned ellipse, anti-aliased over about `px`."""
    k = 0.5 * min(rx, ry) / px  # soft((f - 1) * min(rx, ry) / 2, px) with f the ellipse's implicit form
    a = (x - cx) / rx
    b = (y - cy) / ry
    return clip01(0.5 + k - k * (a * a + b * b))


@kernel
def ray(q, pu: float, pv: float) -> tuple[float, float]:
    """(coverage, depth s along the ray) of the front hit of the view ray (pu, pv) with a surface.

    The discriminant of the ray's quadratic is a quadratic form in (pu, pv), scaled to about
    a signed distance in pixels for the anti-aliased outline."""
    disc = pu * (q[0] * pu + q[1] * pv + q[2]) + pv * (q[3] * pv + q[4]) + q[5]
    cov = clip01(disc * q[6] + 0.5)
    s = (math.sqrt(max(disc, 0.0)) - (q[7] * pu + q[8] * pv + q[9])) * q[10]
    return cov, s


@kernel
def normal(q, pu: float, pv: float, s: float) -> tuple[float, float, float]:
    """The surface's view-space normal at depth s (unnormalised: `finish` normalises once)."""
    return (q[11] * pu + q[12] * pv + q[13] * s + q[14],
            q[15] * pu + q[16] * pv + q[17] * s + q[18],
            q[19] * pu + q[20] * pv + q[21] * s + q[22])


@kernel
def hit(m, pu: float, pv: float, s: float) -> tuple[float, float, float]:
    """Head-space (x, y, z) of the point at depth s on the ray (pu, pv); m: view -> head (3, 3)."""
    return (m[0, 0] * pu + m[0, 1] * pv + m[0, 2] * s,
            m[1, 0] * pu + m[1, 1] * pv + m[1, 2] * s,
            m[2, 0] * pu + m[2, 1] * pv + m[2, 2] * s)


@kernel
def paint(albedo, i: int, j: int, a: float, r: float, g: float, b: float) -> None:
    """Alpha-composite a colour over pixel (i, j)."""
    albedo[0, i, j] += (r - albedo[0, i, j]) * a
    albedo[1, i, j] += (g - albedo[1, i, j]) * a
    albedo[2, i, j] += (b - albedo[2, i, j]) * a


@kernel
def paint_lit(albedo, lit, i: int, j: int, a: float, r: float, g: float, b: float, how_lit: float) -> None:
    """`paint`, and blend how strongly the lighting applies here (1: fully, skin; less: cloth, hair)."""
    paint(albedo, i, j, a, r, g, b)
    lit[i, j] += (how_lit - lit[i, j]) * a


@kernel
def claim(label, i: int, j: int, a: float, cls: int) -> None:
    """The pixel's class becomes `cls` where the layer covers more than half of it."""
    if a > 0.5:
        label[i, j] = cls


@kernel
def set_normal(nrm, i: int, j: int, a: float, nx: float, ny: float, nz: float) -> None:
    """The pixel's normal becomes (nx, ny, nz) where the layer covers more than half of it."""
    if a > 0.5:
        nrm[0, i, j] = nx
        nrm[1, i, j] = ny
        nrm[2, i, j] = nz


# --------------------------------------------------------------------------- float32 row passes
#
# The layers that cover most pixels (skin, hair, eyes and brows, neck, shoulders) run as
# passes over one image row at a time: a branch-free pass computes every pixel's coverage,
# depth, colour and normal into scratch rows, then short passes blend and claim. Without
# branches, in float32, LLVM turns each pass into AVX2 code that does 8 pixels an
# instruction (the scalar per-pixel loops were ~3x slower); libm's sin and exp are calls it
# cannot vectorise, hence the polynomials. Every constant in these is a float32: one float64
# in an expression makes the pass run at half width.

F32 = np.float32
_PI_HI, _PI_LO = F32(3.1415927), F32(-8.742278e-08)  # pi = _PI_HI + _PI_LO, for the reduction


@kernel
def sin32(x):
    """sin(x) with x = r + k pi, r in [-pi/2, pi/2], a degree-11 Taylor polynomial in r and
    the sign of (-1)^k: off by < 3e-7 for |x| < 10, growing with |x| (the reduction's float32
    rounding) to < 1e-5 at 200; the hair's streak phases stay below ~110."""
    k = np.floor(x * F32(0.31830987) + F32(0.5))
    r = (x - k * _PI_HI) - k * _PI_LO
    r2 = r * r
    p = r * (F32(1.0) + r2 * (F32(-1 / 6) + r2 * (F32(1 / 120) + r2 * (F32(-1 / 5040) + r2 * (
        F32(1 / 362880) + r2 * F32(-1 / 39916800))))))
    return p - F32(2.0) * p * (k - F32(2.0) * np.floor(k * F32(0.5)))  # odd k: -p


@kernel
def exp_neg32(t):
    """exp(t) for t in [-16, 0] (clamped below, where it is < 1.2e-7) to < 1e-6: exp(t/16)^16,
    the inner one a degree-7 Taylor polynomial on [-1, 0]."""
    r = max(t, F32(-16.0)) * F32(0.0625)
    p = F32(1.0) + r * (F32(1.0) + r * (F32(0.5) + r * (F32(1 / 6) + r * (F32(1 / 24) + r * (
        F32(1 / 120) + r * (F32(1 / 720) + r * F32(1 / 5040)))))))
    p = p * p
    p = p * p
    p = p * p
    return p * p


@kernel
def clip32(v):
    return min(max(v, F32(0.0)), F32(1.0))


@kernel
def soft32(d, px):
    return clip32(F32(0.5) - d / px)


@kernel
def ellipse32(x, y, cx, cy, rx, ry, px):
    """`ellipse` in float32."""
    k = F32(0.5) * min(rx, ry) / px
    a = (x - cx) / rx
    b = (y - cy) / ry
    return clip32(F32(0.5) + k - k * (a * a + b * b))


@kernel
def ray32(q, pu, pv):
    """`ray` in float32 (q from `surface32`)."""
    disc = pu * (q[0] * pu + q[1] * pv + q[2]) + pv * (q[3] * pv + q[4]) + q[5]
    cov = clip32(disc * q[6] + F32(0.5))
    s = (np.sqrt(max(disc, F32(0.0))) - (q[7] * pu + q[8] * pv + q[9])) * q[10]
    return cov, s


@kernel
def normal32(q, pu, pv, s):
    return (q[11] * pu + q[12] * pv + q[13] * s + q[14],
            q[15] * pu + q[16] * pv + q[17] * s + q[18],
            q[19] * pu + q[20] * pv + q[21] * s + q[22])


@kernel
def hit32(m, pu, pv, s):
    """`hit` with m from `matrix32`."""
    return (m[0] * pu + m[1] * pv + m[2] * s,
            m[3] * pu + m[4] * pv + m[5] * s,
            m[6] * pu + m[7] * pv + m[8] * s)


@kernel
def surface32(q):
    """A surface's coefficients as a float32 tuple, for `ray32` and `normal32`. Held in
    registers rather than memory: the compiler vectorises a pass only when it can rule out
    that its stores overwrite what it reads, and for arrays it cannot."""
    return to_fixed_tuple(q.astype(F32), SURFACE)


@kernel
def matrix32(m):
    """The (3, 3) view -> head matrix as a float32 tuple, row by row, for `hit32`."""
    return to_fixed_tuple(m.astype(F32).ravel(), 9)


@kernel
def blend_row_to(dst, a, value):
    """Alpha-composite one value over a row: dst += (value - dst) a."""
    for j in range(dst.shape[0]):
        dst[j] += (value - dst[j]) * a[j]


@kernel
def paint_lit_row(albedo, lit, label, i, c0, c1, a, colour, how_lit, cls):
    """`paint_lit` and `claim` of one float32 colour over columns c0:c1 of row i, coverage a."""
    for k in range(3):
        blend_row_to(albedo[k, i, c0:c1], a, colour[k])
    blend_row_to(lit[i, c0:c1], a, how_lit)
    claim_row(label[i, c0:c1], a, cls)


@kernel
def blend_shaded_row(dst, a, value, shade):
    """`blend_row_to` of value * shade (per pixel)."""
    for j in range(dst.shape[0]):
        dst[j] += (value * shade[j] - dst[j]) * a[j]


@kernel
def blend_skin_row(dst, a, grain, value, blush, blush_weight):
    """`blend_row_to` of value * grain + blush_weight * blush (per pixel)."""
    for j in range(dst.shape[0]):
        dst[j] += (value * grain[j] + blush_weight * blush[j] - dst[j]) * a[j]


@kernel
def put_row(dst, src, a, above):
    """dst = src where a > above: what `claim` and `set_normal` do, for a row.

    Both values are loaded before the choice (here and below): a load inside the branch is
    one the compiler may not move out of it, and the pass would stay scalar."""
    for j in range(dst.shape[0]):
        new, old = src[j], dst[j]
        dst[j] = new if a[j] > above else old


@kernel
def put_normal_row(dst, a, pu, pv, s, c0, c1, c2, c3):
    """One component of a surface's normal (c0 pu + c1 pv + c2 s + c3, a row of `normal32`)
    where a > 1/2."""
    for j in range(dst.shape[0]):
        new, old = c0 * pu[j] + c1 * pv[j] + c2 * s[j] + c3, dst[j]
        dst[j] = new if a[j] > F32(0.5) else old


@kernel
def claim_row(label, a, cls):
    for j in range(label.shape[0]):
        old = label[j]
        label[j] = cls if a[j] > F32(0.5) else old

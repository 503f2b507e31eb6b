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
- arithmetic is float64 (Python floats are), storage float32.
"""

from __future__ import annotations

import math

from numba import njit

# Every kernel: cached on disk (compiled once per machine), no GIL, numpy's division
# semantics (no ZeroDivisionError checks in the inner loops).
kernel = njit(cache=True, nogil=True, error_model="numpy", fastmath=True)

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


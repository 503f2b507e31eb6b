"""The renderer: one identity + one nuisance -> an RGB face and its segmentation map.

The head is a union of ellipsoids (cranium, jaw, nose bridge, nose tip) ray-cast exactly
under yaw and pitch (orthographic camera), so turning the head foreshortens the far side,
hides the far eye behind the nose and shows the ear: a 2.5-D warp rather than an image
rotation. Roll, crop jitter and zoom are a similarity on the image plane. Eyes, brows,
lips, moles, beard and glasses are painted in the head's own frontal coordinates (x, y) of
each ray's hit point, so they move with the surface. Hair and hats are shells slightly
larger than the cranium, cut by a hairline.

Each layer is two halves: its geometry, which folds the identity and the camera into a few
coefficients and finds the pixel window the layer can reach, then a kernel (see
`pixel.py`) that does the layer's per-pixel work over that window in one loop. Both are
compiled with numba and `render` makes one call into them a face: the world is rendered by
the hundred thousand, and at 112 px a numpy version spends its time in the ~1,500 array
calls a face needs, and a Python version of the geometry ~0.3 ms a face (a quarter of the
render) in attribute lookups and kernel dispatch. The layers covering most pixels (skin,
hair, eyes and brows, neck, shoulders, finishing) are float32 row passes that LLVM
vectorises; the rest loop per pixel in float64.

Features that come in mirror pairs (eyes, brows, nostrils, nose wings, cheek folds,
dimples, lenses) are painted once, for both sides, in mirrored head coordinates |x|.

Label map: CelebAMask-HQ's 19 classes, in `CLASSES` order. ``l_*`` is the subject's left
(the image's right in a frontal view), as in CelebAMask-HQ's annotation files.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit

from fsbench.generators.procedural.params import BALD, BUZZ, CURLY, HAIR_STYLES, LONG, MEDIUM, TIED, Identity, Nuisance
from fsbench.generators.procedural.pixel import (
    F32,
    SURFACE,
    blend_row_to,
    blend_shaded_row,
    blend_skin_row,
    claim,
    claim_row,
    clip01,
    clip32,
    ellipse,
    ellipse32,
    exp_neg32,
    hit,
    hit32,
    kernel,
    matrix32,
    normal,
    normal32,
    paint,
    paint_lit,
    paint_lit_row,
    put_normal_row,
    put_row,
    ray,
    ray32,
    set_normal,
    sin32,
    soft,
    soft32,
    surface32,
)

CLASSES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
(BG, SKIN, NOSE, EYE_G, L_EYE, R_EYE, L_BROW, R_BROW, L_EAR, R_EAR,
 MOUTH, U_LIP, L_LIP, HAIR, HAT, EARRING, NECKLACE, NECK, CLOTH) = range(19)

ZOOM = 0.95  # head units per half image: framing close to insightface's aligned 112x112 crops
HEAD_V = 0.0  # where the cranium centre sits vertically (image units, down positive)
CRANIUM_CY = -0.05  # cranium centre in head coordinates (y down); the jaw hangs below it


# classes the nose may cover (it protrudes over the face, never over hair or background)
_UNDER_NOSE = np.zeros(len(CLASSES), np.bool_)
_UNDER_NOSE[[SKIN, L_EYE, R_EYE, U_LIP, L_LIP, L_BROW, R_BROW]] = True
# classes a pair of glasses may sit on
_UNDER_GLASSES = np.ones(len(CLASSES), np.bool_)
_UNDER_GLASSES[[BG, HAIR, NECK, CLOTH]] = False
# the hair's reach down the side of the head, by style (normalised cranium units)
_HAIR_SIDE = tuple({BUZZ: 0.02, MEDIUM: 0.55, LONG: 1.0, TIED: 0.05, CURLY: 0.35}.get(style, 0.05)
                   for style in range(len(HAIR_STYLES)))


@lru_cache(maxsize=8)
def _axis(size: int) -> np.ndarray:
    """Pixel-centre coordinates along one image axis, in [-1, 1]."""
    return (np.arange(size, dtype=F32) + 0.5) / (size / 2) - 1


@lru_cache(maxsize=1)
def _bank() -> np.ndarray:
    """A fixed, smooth-ish noise texture (same on every machine: seeded, numpy only)."""
    r = np.random.Generator(np.random.PCG64(20240601))
    n = r.standard_normal((3, 512, 512)).astype(F32)
    # mild low-pass so skin noise reads as texture rather than salt and pepper
    n = (n + np.roll(n, 1, 1) + np.roll(n, 1, 2) + np.roll(n, (1, 1), (1, 2))) * F32(0.5)
    return n


def warm_caches(size: int = 112) -> None:
    """Build the per-process tables and load (or, once per machine, compile) every kernel
    now: call it before forking workers, which then inherit all of it."""
    from fsbench.generators.procedural.params import draw_identity, draw_nuisance

    _bank()
    _axis(size)
    for k, style in enumerate((LONG, TIED, CURLY, MEDIUM)):  # every layer, glasses, hat and open mouth included
        ident = replace(draw_identity(0, k), hair_style=style, beard=k + 1, earrings=True)
        nz = replace(draw_nuisance(0, k, 0), glasses=1 + k % 2, hat=k % 2, mouth_open=0.5 * (k % 2), smile=0.5,
                     noise=0.01, blur=0.0)
        render(ident, nz, size)


# The scene's geometry is compiled too, without fastmath: one call renders a face (numba's
# dispatch and Python's attribute lookups cost ~0.3 ms a face when each layer's geometry ran
# as Python), and IEEE arithmetic keeps every coefficient and window what Python computed.
geometry = njit(cache=True, nogil=True, error_model="numpy")


@geometry
def _surface_z(ident, x, y):
    """Depth of the cranium's front surface at head point (x, y): for bounding boxes."""
    a, b, c = ident.head_w, ident.head_h, ident.head_w * 1.15
    t = 1 - (x / a) ** 2 - ((y - CRANIUM_CY) / b) ** 2
    return c * math.sqrt(max(t, 0.0))


@kernel
def _canvas_px(planes, label, pu_rows, pu_cols, pv_rows, pv_cols):
    """The blank canvas: flat normals (0, 0, 1), lit 0.25 (1 where lighting applies fully),
    head coordinates parked (hx 0, hy 9, front 0, depth -9), labels background, and each
    pixel's view coordinates pu, pv as outer sums of a row and a column term."""
    planes[3:5] = 0.0
    planes[5] = 1.0
    planes[6] = 0.25
    planes[9] = 0.0
    planes[10] = 9.0
    planes[11] = 0.0
    planes[12] = -9.0
    label[:] = 0
    pu, pv = planes[7], planes[8]
    for i in range(label.shape[0]):
        pu_row, pv_row = pu[i], pv[i]
        for j in range(label.shape[1]):
            pu_row[j] = pu_rows[i] + pu_cols[j]
        for j in range(label.shape[1]):
            pv_row[j] = pv_rows[i] + pv_cols[j]


class _Camera(NamedTuple):
    """One image's camera and the canvas being composited: what every layer receives.

    Normals are stored unnormalised (any positive scale of a surface gradient); `_finish`
    normalises once per pixel instead of once per layer. Head coordinates (hx, hy), the
    front-facing weight and the depth of the skin are filled in by the head layer; outside
    the head they stay parked far from every feature (hy = 9, front = 0).
    """

    size: int
    R: np.ndarray  # head -> view, R = Rx(pitch) Ry(yaw)
    M: np.ndarray  # view -> head: R^T
    zoom: float
    roll_c: float
    roll_s: float
    shift_u: float
    shift_v: float
    px: float  # one pixel in head units
    maps: tuple  # albedo, normal, label, lit, pu, pv, hx, hy, front, depth


@geometry
def _camera(size, nrec, axis):
    nz = nrec[0]
    yaw, pitch, roll = math.radians(nz.yaw), math.radians(nz.pitch), math.radians(nz.roll)
    zoom = ZOOM * nz.scale
    cr, sr = math.cos(roll), math.sin(roll)
    k = 1.0 / zoom
    su, sv = nz.shift_x, nz.shift_y + HEAD_V
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    R = np.empty((3, 3))
    R[0, 0], R[0, 1], R[0, 2] = cy, 0.0, sy
    R[1, 0], R[1, 1], R[1, 2] = sp * sy, cp, -sp * cy
    R[2, 0], R[2, 1], R[2, 2] = -cp * sy, sp, cp * cy
    M = R.T.copy()
    # every float map in one block: albedo 0-2 (the background covers it), normal 3-5, lit,
    # pu, pv, hx, hy, front, depth
    planes = np.empty((13, size, size), np.float32)
    label = np.empty((size, size), np.uint8)
    # image -> de-rolled view coordinates (head centre at the origin): an outer sum of two
    # axes, in float32 as numpy computes `axis - shift`
    du = axis - np.float32(su)  # along columns
    dv = axis - np.float32(sv)  # along rows
    _canvas_px(planes, label, dv * np.float32(sr * k), du * np.float32(cr * k), dv * np.float32(cr * k),
               du * np.float32(-sr * k))
    maps = (planes[0:3], planes[3:6], label, planes[6], planes[7], planes[8], planes[9], planes[10], planes[11],
            planes[12])
    return _Camera(size, R, M, zoom, cr, sr, su, sv, 2.0 / (size * zoom), maps)


@geometry
def _window(cv, pts, margin=2.0):
    """The pixel box covering the projections of head points (x, y, z)."""
    R = cv.R
    n = len(pts)
    us, vs = np.empty(n), np.empty(n)
    for k in range(n):
        x, y, z = pts[k]
        us[k] = R[0, 0] * x + R[0, 1] * y + R[0, 2] * z
        vs[k] = R[1, 0] * x + R[1, 1] * y + R[1, 2] * z
    return _box(cv, us, vs, margin)


@geometry
def _box(cv, us, vs, margin=2.0):
    """The pixel box covering view-plane points (u, v) (head units, before roll); empty
    (0, 0, 0, 0) when it misses the image."""
    cr, sr = cv.roll_c, cv.roll_s
    z, half = cv.zoom, cv.size / 2
    rmin = cmin = math.inf
    rmax = cmax = -math.inf
    for k in range(len(us)):
        u, v = us[k], vs[k]
        col = ((cr * u - sr * v) * z + cv.shift_u + 1) * half - 0.5
        row = ((sr * u + cr * v) * z + cv.shift_v + 1) * half - 0.5
        cmin, cmax = min(cmin, col), max(cmax, col)
        rmin, rmax = min(rmin, row), max(rmax, row)
    r0 = max(math.floor(rmin - margin), 0)
    r1 = min(math.ceil(rmax + margin) + 1, cv.size)
    c0 = max(math.floor(cmin - margin), 0)
    c1 = min(math.ceil(cmax + margin) + 1, cv.size)
    if r1 <= r0 or c1 <= c0:
        return (0, 0, 0, 0)
    return (r0, r1, c0, c1)


@geometry
def _rows_below(cv, v0):
    """The rows holding any pixel with pv > v0 (pv grows down the rows: |roll| < 90 degrees)."""
    pv = cv.maps[5]
    # pv is linear along a row, so its largest value sits at one end of it
    v = np.float32(v0)  # numpy compares a float32 array with a float at float32
    r0 = min(np.searchsorted(pv[:, 0], v, side="right"), np.searchsorted(pv[:, -1], v, side="right"))
    if r0 >= cv.size:
        return (0, 0, 0, 0)
    return (r0, cv.size, 0, cv.size)


@geometry
def surface(cv, centre, axes):
    """The `SURFACE` coefficients of an ellipsoid (head space) as this camera sees it."""
    return _surface(cv.M, centre, axes, cv.px)


@kernel
def _surface(M, centre, axes, px):
    """A ray is h(s) = M (pu, pv, s). On the ellipsoid, sum(((h - c) / a)^2) = 1 reads
    A s^2 + B s + C = 0 with B linear in (pu, pv) and the discriminant B^2 - 4AC a quadratic
    form in them; the normal, the ellipsoid's gradient rotated into view space (R = M^T),
    is linear in (pu, pv, s)."""
    q = np.empty(SURFACE)
    k = np.empty(3)
    w = np.empty(3)
    for i in range(3):
        k[i] = 1.0 / (axes[i] * axes[i])
        w[i] = k[i] * M[i, 2]
    A = w[0] * M[0, 2] + w[1] * M[1, 2] + w[2] * M[2, 2]
    bu = 2 * (w[0] * M[0, 0] + w[1] * M[1, 0] + w[2] * M[2, 0])
    bv = 2 * (w[0] * M[0, 1] + w[1] * M[1, 1] + w[2] * M[2, 1])
    b0 = -2 * (w[0] * centre[0] + w[1] * centre[1] + w[2] * centre[2])
    cuu = cuv = cvv = cu = cv = 0.0
    c0 = -1.0
    for i in range(3):
        cuu += k[i] * M[i, 0] * M[i, 0]
        cuv += 2 * k[i] * M[i, 0] * M[i, 1]
        cvv += k[i] * M[i, 1] * M[i, 1]
        cu += -2 * k[i] * M[i, 0] * centre[i]
        cv += -2 * k[i] * M[i, 1] * centre[i]
        c0 += k[i] * centre[i] * centre[i]
    A4 = 4 * A
    # disc = pu (q0 pu + q1 pv + q2) + pv (q3 pv + q4) + q5
    q[0], q[1], q[2] = bu * bu - A4 * cuu, 2 * bu * bv - A4 * cuv, 2 * bu * b0 - A4 * cu
    q[3], q[4], q[5] = bv * bv - A4 * cvv, 2 * bv * b0 - A4 * cv, b0 * b0 - A4 * c0
    q[6] = axes[0] * axes[1] * axes[2] / 8.0 / px  # disc -> about a signed distance in pixels
    q[7], q[8], q[9], q[10] = bu, bv, b0, 0.5 / A  # s = (sqrt(disc) - B) / 2A
    for j in range(3):  # normal row j = (R diag(k) M | -R diag(k) c)[j], R = M^T
        for m in range(3):
            q[11 + 4 * j + m] = k[0] * M[0, j] * M[0, m] + k[1] * M[1, j] * M[1, m] + k[2] * M[2, j] * M[2, m]
        q[14 + 4 * j] = -(k[0] * M[0, j] * centre[0] + k[1] * M[1, j] * centre[1] + k[2] * M[2, j] * centre[2])
    return q


# --------------------------------------------------------------------------- the scene


# Identity and nuisance reach the compiled scene as numpy records (attribute access, and
# ~0.5 us to pass where a namedtuple of 60 fields costs 6 us); moles, a variable-length
# list, as a (3, n) array of x, y, radius.
_MOLES = ("mole_x", "mole_y", "mole_r")
_IDENTITY_FIELDS = tuple(f.name for f in fields(Identity) if f.name not in _MOLES)
_NUISANCE_FIELDS = tuple(f.name for f in fields(Nuisance))
_IDENTITY_RECORD = np.dtype([(name, np.float64) for name in _IDENTITY_FIELDS])
_NUISANCE_RECORD = np.dtype([(name, np.float64) for name in _NUISANCE_FIELDS])


def render(ident: Identity, nz: Nuisance, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (size, size, 3) RGB, uint8 (size, size) class indices)."""
    moles = np.array([getattr(ident, name) for name in _MOLES], np.float64).reshape(3, -1)
    taps = _blur_taps(round(nz.blur * size / 112, 3))  # sigma to 1e-3: a cache key, far below visible
    return _render(_record(ident, _IDENTITY_FIELDS, _IDENTITY_RECORD), moles, _record(nz, _NUISANCE_FIELDS, _NUISANCE_RECORD),
                   size, _axis(size), _bank(), taps)


def camera(nz: Nuisance, size: int) -> _Camera:
    """One image's camera over a blank canvas, as `render` starts it (for tests and tools)."""
    return _camera(size, _record(nz, _NUISANCE_FIELDS, _NUISANCE_RECORD), _axis(size))


def _record(obj: Identity | Nuisance, names: tuple[str, ...], dtype: np.dtype) -> np.ndarray:
    return np.array([getattr(obj, name) for name in names], np.float64).view(dtype)


@geometry
def _render(irec, moles, nrec, size, axis, bank, taps):
    ident, nz = irec[0], nrec[0]
    cv = _camera(size, nrec, axis)
    age = ident.base_age + nz.age_delta
    grey = min(max((age - 42) / 35, 0.0), 0.85)
    hair = (ident.hair_r * (1 - grey) + 0.72 * grey, ident.hair_g * (1 - grey) + 0.72 * grey,
            ident.hair_b * (1 - grey) + 0.70 * grey)
    skin = (ident.skin_r, ident.skin_g, ident.skin_b)
    yaw_s = math.sin(math.radians(nz.yaw))

    _background(cv, nz, axis)
    _cloth_neck(cv, ident, nz, skin)
    if ident.hair_style == LONG:
        _long_hair(cv, ident, hair)
    if ident.hair_style == TIED:
        _bun(cv, ident, hair)
    ears = _ears(cv, ident, nz)
    for ear in ears:
        if not ear.near:
            _paint_ear(cv, ear, skin)

    W = _head_window(cv, ident, True)
    _head(cv, ident, skin, _head_window(cv, ident, False), bank)
    _face_details(cv, ident, moles, skin, age)
    _eyes_brows(cv, ident, nz, hair)
    _mouth(cv, ident, nz, skin)
    _nose(cv, ident, skin)
    for ear in ears:
        if ear.near:
            _paint_ear(cv, ear, skin)
    _hair(cv, ident, nz, hair, W)
    if ident.earrings:
        for ear in ears:
            if ear.near or abs(yaw_s) < 0.3:
                _earring(cv, ear)
    if nz.glasses:
        _glasses(cv, ident, nz)
    if nz.hat:
        _hat(cv, ident, nz, W)
    return _finish(cv, nz, bank, taps), cv.maps[2]


# --------------------------------------------------------------------------- layers


@kernel
def _background_px(maps, axis, kind, r1, g1, b1, r2, g2, b2, fu, fv):
    """Flat, vertical gradient (down the rows) or soft blobs: separable, so built from 1-D profiles."""
    albedo = maps[0]
    n = albedo.shape[1]
    rows, cols = np.zeros(n), np.ones(n)
    for i in range(n):
        if kind == 1:
            rows[i] = axis[i] * 0.5 + 0.5
        elif kind == 2:
            rows[i] = math.sin(axis[i] * 2.3 + fv * 6)
            cols[i] = math.sin(axis[i] * 3.1 + fu * 6)
    for i in range(n):
        for j in range(n):
            t = rows[i] * cols[j] * 0.5 + 0.5 if kind == 2 else rows[i]
            albedo[0, i, j] = r1 + (r2 - r1) * t
            albedo[1, i, j] = g1 + (g2 - g1) * t
            albedo[2, i, j] = b1 + (b2 - b1) * t


@geometry
def _background(cv, nz, axis):
    _background_px(cv.maps, axis, nz.background, nz.bg_r, nz.bg_g, nz.bg_b,
                   nz.bg2_r, nz.bg2_g, nz.bg2_b, nz.noise_u, nz.noise_v)


@kernel
def _neck_px(maps, w, un, rn, px, r, g, b):
    """A vertical cylinder below the jaw (a float32 row pass, see `pixel.py`)."""
    albedo, nrm, label, lit, pu, pv = maps[:6]
    c0, c1 = w[2], w[3]
    out = np.empty((4, c1 - c0), F32)
    colour = (F32(r), F32(g), F32(b))
    for i in range(w[0], w[1]):
        _neck_row(pu[i, c0:c1], pv[i, c0:c1], F32(un), F32(rn), F32(px), out)
        a = out[0]
        paint_lit_row(albedo, lit, label, i, c0, c1, a, colour, F32(1.0), NECK)
        for k in range(3):
            put_row(nrm[k, i, c0:c1], out[1 + k], a, F32(0.5))


@kernel
def _neck_row(pu, pv, un, rn, px, out):
    """out[0] coverage, 1-3 normal."""
    for j in range(out.shape[1]):
        du = pu[j] - un
        out[0, j] = soft32(abs(du) - rn, px) * soft32(F32(0.2) - pv[j], px)
        nx = min(max(du / rn, F32(-1.0)), F32(1.0))
        out[1, j], out[2, j], out[3, j] = nx, F32(0.25), np.sqrt(max(F32(1.0) - nx * nx, F32(0.0)))


@kernel
def _cloth_px(maps, w, un, base, px, r, g, b):
    """Shoulders sloping away from a neckline (a float32 row pass, see `pixel.py`)."""
    albedo, _, label, lit, pu, pv = maps[:6]
    c0, c1 = w[2], w[3]
    a = np.empty(c1 - c0, F32)
    colour = (F32(r), F32(g), F32(b))
    for i in range(w[0], w[1]):
        _cloth_row(pu[i, c0:c1], pv[i, c0:c1], F32(un), F32(base), F32(px), a)
        paint_lit_row(albedo, lit, label, i, c0, c1, a, colour, F32(0.7), CLOTH)


@kernel
def _cloth_row(pu, pv, un, base, px, a):
    for j in range(a.shape[0]):
        du = pu[j] - un
        top = exp_neg32(-(du * F32(2.6)) ** 2) * F32(0.25) + base - min(abs(du), F32(1.2)) * F32(0.12)
        a[j] = soft32(top - pv[j], px)


@geometry
def _cloth_neck(cv, ident, nz, skin):
    yaw_s = math.sin(math.radians(nz.yaw))
    un = -0.12 * yaw_s  # the neck's axis sits behind the head centre
    rn = ident.jaw_w * 0.78
    win = _box(cv, np.array([un - rn, un + rn, un - rn, un + rn]), np.array([0.2, 0.2, 3.0, 3.0]), 2)
    _neck_px(cv.maps, win, un, rn, cv.px, 0.93 * skin[0], 0.93 * skin[1], 0.93 * skin[2])
    base = 1.02 + 0.12 * (ident.head_h - 1)
    win = _rows_below(cv, base - 0.12 * 1.2 - 2 * cv.px)
    _cloth_px(cv.maps, win, un, base, cv.px, nz.cloth_r, nz.cloth_g, nz.cloth_b)


@kernel
def _long_hair_px(maps, w, width, px, r, g, b):
    """A curtain of hair behind the head, down to the shoulders."""
    albedo, _, label, lit, pu, pv = maps[:6]
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            v = pv[i, j]
            a = soft(v * (0.08 * width) + abs(pu[i, j]) - 1.02 * width, px) * soft(v - 1.35, px) * soft(-0.2 - v, px)
            paint_lit(albedo, lit, i, j, a, r, g, b, 0.6)
            claim(label, i, j, a, HAIR)


@geometry
def _long_hair(cv, ident, hair):
    w = ident.head_w * (1.0 + ident.hair_volume)
    half = w * (1.02 + 0.08 * 0.2) + cv.px * 2
    win = _box(cv, np.array([-half, half, -half, half]), np.array([-0.2, -0.2, 1.35, 1.35]), 2)
    _long_hair_px(cv.maps, win, w, cv.px, 0.8 * hair[0], 0.8 * hair[1], 0.8 * hair[2])


@kernel
def _blob_px(maps, w, surf, r, g, b, cls, how_lit):
    """A plain ray-cast ellipsoid (a hair bun)."""
    albedo, _, label, lit, pu, pv = maps[:6]
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            a, _s = ray(surf, pu[i, j], pv[i, j])
            paint_lit(albedo, lit, i, j, a, r, g, b, how_lit)
            claim(label, i, j, a, cls)


@geometry
def _bun(cv, ident, hair):
    c = (0.0, CRANIUM_CY - 0.55 * ident.head_h, -0.55 * ident.head_w)
    r = 0.25
    win = _window(cv, [(c[0] + r, c[1] + r, c[2]), (c[0] - r, c[1] - r, c[2]), (c[0] + r, c[1] - r, c[2]),
                       (c[0] - r, c[1] + r, c[2])], 3)
    _blob_px(cv.maps, win, surface(cv, c, (r, r * 0.9, r)), hair[0], hair[1], hair[2], HAIR, 0.8)


class _Ear(NamedTuple):
    """One ear on the view plane. A near ear has swung toward the camera and is painted
    over the head, a far one under it."""

    u: float
    v: float
    half_w: float
    half_h: float
    label: int
    near: bool


@geometry
def _ears(cv, ident, nz):
    """Both ears (`_Ear`)."""
    yaw_s = math.sin(math.radians(nz.yaw))
    R = cv.R
    out = []
    for side, label in ((1.0, L_EAR), (-1.0, R_EAR)):
        p = (side * (ident.head_w + 0.015), ident.ear_y, -0.06)
        v = (R[0, 0] * p[0] + R[0, 1] * p[1] + R[0, 2] * p[2], R[1, 0] * p[0] + R[1, 1] * p[1] + R[1, 2] * p[2],
             R[2, 0] * p[0] + R[2, 1] * p[1] + R[2, 2] * p[2])
        toward = v[2] > 0.08 * ident.head_w  # the ear has swung toward the camera
        h = ident.ear_size / 2
        w = ident.ear_size * (0.16 + 0.24 * abs(yaw_s)) if toward else ident.ear_size * 0.16 * max(1 - abs(yaw_s) * 1.6, 0.15)
        # centre pushed outward so a frontal ear sticks out of the silhouette
        u0 = v[0] + (0 if toward else side * w * 0.6 * (1 - abs(yaw_s)))
        out.append(_Ear(u0, v[1], max(w, 0.035), h, label, toward))
    return out


@kernel
def _ear_px(maps, w, u, v, ew, eh, px, r, g, b, cls):
    albedo, _, label, lit, pu, pv = maps[:6]
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            x, y = pu[i, j], pv[i, j]
            a = ellipse(x, y, u, v + eh * 0.05, ew, eh, px)
            paint_lit(albedo, lit, i, j, a, 0.9 * r, 0.9 * g, 0.9 * b, 0.9)
            claim(label, i, j, a, cls)
            inner = ellipse(x, y, u, v, ew * 0.55, eh * 0.6, px) * a * 0.5
            paint(albedo, i, j, inner, 0.6 * r, 0.6 * g, 0.6 * b)


@geometry
def _paint_ear(cv, ear, skin):
    u, v = ear.u, ear.v
    rad = max(ear.half_w, ear.half_h) + cv.px  # the ear's extent, plus a pixel
    win = _box(cv, np.array([u - rad, u + rad]), np.array([v - rad, v + rad]), 2)
    _ear_px(cv.maps, win, u, v, ear.half_w, ear.half_h, cv.px, skin[0], skin[1], skin[2], ear.label)


@kernel
def _disc_px(maps, w, u, v, rad, px, r, g, b, cls, how_lit):
    """A flat disc on the image plane (an earring)."""
    albedo, _, label, lit, pu, pv = maps[:6]
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            a = ellipse(pu[i, j], pv[i, j], u, v, rad, rad, px)
            paint_lit(albedo, lit, i, j, a, r, g, b, how_lit)
            claim(label, i, j, a, cls)


@geometry
def _earring(cv, ear):
    u, v = ear.u, ear.v + ear.half_h * 1.05
    win = _box(cv, np.array([u - 0.05, u + 0.05]), np.array([v - 0.05, v + 0.05]), 2)
    _disc_px(cv.maps, win, u, v, 0.028, cv.px, 0.85, 0.75, 0.35, EARRING, 1.0)


@geometry
def _head_window(cv, ident, hair):
    """Pixels the head (and with `hair`, its hair and any hat) can reach: the ray casts stay inside."""
    v = max(ident.hair_volume, 0.02) + 0.07 if hair else 0.0
    a, b, c = ident.head_w * (1 + v), ident.head_h * (1 + v), ident.head_w * 1.15 * (1 + v)
    pts = [(sx * a, CRANIUM_CY + sy * b, sz * c) for sx in (-1.0, 1.0) for sy in (-1.0, 1.0) for sz in (-1.0, 1.0)]
    pts += [(sx * ident.jaw_w, ident.chin_y + 0.02, sz * ident.jaw_w * 1.2) for sx in (-1.0, 1.0) for sz in (-1.0, 1.0)]
    return _window(cv, pts, 2)


@kernel
def _head_px(maps, w, cran, jaw, m, tex, tu, tv, grain, blush, r, g, b):
    """Cranium and jaw: skin albedo, normals, depth and the head coordinates of every pixel
    (float32 row passes, see `pixel.py`)."""
    albedo, nrm, label, lit, pu, pv, hx, hy, front, depth = maps
    c0, c1 = w[2], w[3]
    q1, q2, mm = surface32(cran), surface32(jaw), matrix32(m)
    flat = tex.ravel()
    out = np.empty((10, c1 - c0), F32)
    where = np.empty(c1 - c0, np.int32)
    grain32, skin = F32(grain), (F32(r), F32(g), F32(b))
    blush32 = (F32(0.5 * blush), F32(-0.15 * blush), F32(-0.1 * blush))
    for i in range(w[0], w[1]):
        _head_row(pu[i, c0:c1], pv[i, c0:c1], q1, q2, mm, F32(tu), F32(tv), out, where)
        a = out[0]
        grain_row = out[9]
        for j in range(c1 - c0):  # the identity's fixed skin texture, looked up in head coordinates
            grain_row[j] = F32(1.0) + flat[where[j]] * grain32
        for k in range(3):
            blend_skin_row(albedo[k, i, c0:c1], a, grain_row, skin[k], out[5], blush32[k])
            put_row(nrm[k, i, c0:c1], out[6 + k], a, F32(0.5))
        blend_row_to(lit[i, c0:c1], a, F32(1.0))
        claim_row(label[i, c0:c1], a, SKIN)
        # off the head (no coverage) head coordinates stay parked, away from every feature
        put_row(depth[i, c0:c1], out[1], a, F32(0.0))
        put_row(hx[i, c0:c1], out[2], a, F32(0.0))
        put_row(hy[i, c0:c1], out[3], a, F32(0.0))
        put_row(front[i, c0:c1], out[4], a, F32(0.0))


@kernel
def _head_row(pu, pv, cran, jaw, m, tu, tv, out, where):
    """One row of the head: out[0] coverage, 1 depth, 2-3 head x and y, 4 front-facing
    weight, 5 blush, 6-8 normal; `where` the texture element under each pixel."""
    one, half = F32(1.0), F32(0.5)
    for j in range(out.shape[1]):
        u, v = pu[j], pv[j]
        cov1, s1 = ray32(cran, u, v)
        cov2, s2 = ray32(jaw, u, v)
        behind = cov1 <= half
        s = s2 if (s2 > s1 and cov2 > half) or behind else s1
        # blend the two surfaces' gradients near the seam so the jaw line does not read as a crease
        wj = one if behind else clip32((s2 - s1) * F32(12.0) + half)
        n1x, n1y, n1z = normal32(cran, u, v, s)
        n2x, n2y, n2z = normal32(jaw, u, v, s)
        x, y, z = hit32(m, u, v, s)
        bx, by = (abs(x) - F32(0.33)) * F32(5.0), (y - F32(0.28)) * F32(4.5)
        out[0, j] = max(cov1, cov2)
        out[1, j] = s
        out[2, j] = x
        out[3, j] = y
        out[4, j] = clip32((z - F32(0.05)) * F32(8.0))  # face features live on the front half only
        out[5, j] = clip32(one - bx * bx - by * by)  # blush on the cheeks
        out[6, j] = n1x + (n2x - n1x) * wj
        out[7, j] = n1y + (n2y - n1y) * wj
        out[8, j] = n1z + (n2z - n1z) * wj
        where[j] = ((np.int32(y * F32(60.0) + tv) & 511) << 9) | (np.int32(x * F32(60.0) + tu) & 511)


@geometry
def _head(cv, ident, skin, W, bank):
    a, b, c = ident.head_w, ident.head_h, ident.head_w * 1.15
    cran = surface(cv, (0.0, CRANIUM_CY, 0.0), (a, b, c))
    jb = ident.jaw_h
    jaw = surface(cv, (0.0, ident.chin_y - jb, 0.02), (ident.jaw_w, jb, ident.jaw_w * 1.2))
    _head_px(cv.maps, W, cran, jaw, cv.M, bank[0], ident.noise_u * 300, ident.noise_v * 300,
             ident.skin_noise * 0.3, ident.blush, skin[0], skin[1], skin[2])


@kernel
def _mole_px(maps, w, mx, my, mr, px, r, g, b):
    albedo, _, label, _, _, _, hx, hy, front, _ = maps
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            if label[i, j] == SKIN:
                a = ellipse(hx[i, j], hy[i, j], mx, my, mr, mr, px) * front[i, j] * 0.85
                paint(albedo, i, j, a, r, g, b)


@kernel
def _forehead_px(maps, w, top, bottom, strength, r, g, b):
    """Horizontal lines across the forehead, fading towards the temples."""
    albedo, _, _, _, _, _, hx, hy, front, _ = maps
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            y = hy[i, j]
            if top < y < bottom:
                line = max(math.sin(y * 90.0), 0.0) ** 4
                a = clip01(1.0 - 2.2 * abs(hx[i, j])) * line * front[i, j] * strength
                paint(albedo, i, j, a, r, g, b)


@kernel
def _folds_px(maps, w, x0, y0, x1, y1, px, strength, r, g, b):
    """Nasolabial folds: a curve from beside the nose to beyond the mouth corner, both sides."""
    albedo, _, _, _, _, _, hx, hy, front, _ = maps
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            y = hy[i, j]
            if y0 < y < y1:
                t = clip01((y - y0) / (y1 - y0))
                xl = ((1.0 - t) * 0.03 + x1 - x0) * t + x0
                a = soft(abs(abs(hx[i, j]) - xl) - 0.008, px) * front[i, j] * strength
                paint(albedo, i, j, a, r, g, b)


@kernel
def _beard_px(maps, w, kind, my, mw, lip_up, density, px, r, g, b):
    """Facial hair on the lower face, labelled skin as CelebAMask-HQ does."""
    albedo, _, label, _, _, _, hx, hy, front, _ = maps
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            if label[i, j] != SKIN:
                continue
            x, y = hx[i, j], hy[i, j]
            if kind == 1:  # stubble
                a = soft(my - 0.08 - y, px * 4) * 0.45
            elif kind == 2:  # moustache
                a = soft(abs(y - (my - lip_up - 0.035)) - 0.028, px) * soft(abs(x) - mw * 1.1, px)
            else:
                if kind == 3:  # goatee
                    a = soft(abs(x) - mw * 0.8, px) * soft(my - 0.07 - y, px)
                else:  # full beard
                    a = soft(my - 0.1 - (y + abs(x) * 0.15), px * 2)
                # keep the lips clear: no hair inside the mouth zone below the upper lip
                zx, zy = x / (mw * 1.15), (y - my) / 0.085
                if zx * zx + zy * zy < 1 and y >= my - lip_up - 0.01:
                    a = 0.0
            paint(albedo, i, j, a * front[i, j] * density, r, g, b)


@geometry
def _face_details(cv, ident, moles, skin, age):
    px = cv.px
    for k in range(moles.shape[1]):
        mx, my, mr = moles[0, k], moles[1, k], moles[2, k]
        z0 = _surface_z(ident, mx, my)
        win = _window(cv, [(mx - mr, my - mr, z0), (mx + mr, my + mr, z0)], 2)
        _mole_px(cv.maps, win, mx, my, mr, px, 0.45 * skin[0], 0.45 * skin[1], 0.45 * skin[2])
    # age: forehead lines and nasolabial folds
    wr = min(max((age - 32) / 40, 0.0), 1.0)
    if wr > 0:
        top = ident.hairline + 0.08
        win = _window(cv, [(-0.4, top, _surface_z(ident, 0.4, top)), (0.4, ident.eye_y - 0.12, _surface_z(ident, 0.0, 0.0)),
                           (0.4, top, _surface_z(ident, 0.4, top))], 2)
        _forehead_px(cv.maps, win, top, ident.eye_y - 0.13, 0.35 * wr, 0.6 * skin[0], 0.6 * skin[1], 0.6 * skin[2])
        x0, y0 = ident.nose_w * 0.75, ident.eye_y + ident.nose_len
        x1, y1 = ident.mouth_w * 1.05, ident.mouth_y + 0.03
        z0, z1 = _surface_z(ident, x0, y0), _surface_z(ident, x1, y1)
        win = _window(cv, [(x0, y0, z0), (x1 + 0.04, y1, z1), (-x0, y0, z0), (-x1 - 0.04, y1, z1)], 2)
        _folds_px(cv.maps, win, x0, y0, x1, y1, px, 0.45 * wr, 0.62 * skin[0], 0.62 * skin[1], 0.62 * skin[2])
    if ident.beard:
        win = _window(cv, [(-0.7, ident.mouth_y - 0.15, 0.1), (0.7, ident.chin_y + 0.05, 0.1)], 3)
        _beard_px(cv.maps, win, ident.beard, ident.mouth_y, ident.mouth_w, ident.lip_up, ident.beard_density, px,
                  0.9 * ident.hair_r, 0.9 * ident.hair_g, 0.9 * ident.hair_b)


@kernel
def _eyes_brows_px(maps, w, e, iris, brow_col, px):
    """Both eyes and brows, in mirrored head coordinates: the subject's left eye is at
    x = +eye_dx, so with ax = |x| every formula serves both sides. A float32 row pass
    (see `pixel.py`): every pixel runs every step, a step that does not reach it painting
    with coverage 0."""
    albedo, _, label, _, _, _, hx, hy, front, _ = maps
    dx, cy, ew, eh, tilt, openness, gaze, by, bl, arch, btilt, bthick = e
    shape = (F32(dx), F32(cy), F32(ew), F32(eh), F32(tilt), F32(openness), F32(gaze), F32(by), F32(bl), F32(arch),
             F32(btilt), F32(bthick), F32(px))
    colours = (F32(iris[0]), F32(iris[1]), F32(iris[2]), F32(brow_col[0]), F32(brow_col[1]), F32(brow_col[2]))
    c0, c1 = w[2], w[3]
    # the row's pixels in two scratch rows the pass updates in place: the compiler vectorises
    # it only when it can rule out that its stores overwrite what it reads, checking each pair
    # of arrays involved, and it gives up for the planes' seven pairs
    buf, lab = np.empty((6, c1 - c0), F32), np.empty(c1 - c0, np.uint8)
    for i in range(w[0], w[1]):
        buf[0], buf[1], buf[2] = hx[i, c0:c1], hy[i, c0:c1], front[i, c0:c1]
        buf[3], buf[4], buf[5] = albedo[0, i, c0:c1], albedo[1, i, c0:c1], albedo[2, i, c0:c1]
        lab[:] = label[i, c0:c1]
        _eyes_brows_row(buf, lab, shape, colours)
        albedo[0, i, c0:c1], albedo[1, i, c0:c1], albedo[2, i, c0:c1] = buf[3], buf[4], buf[5]
        label[i, c0:c1] = lab


@kernel
def _eyes_brows_row(buf, label, e, colours):
    """buf: the row's head x, head y, front-facing weight and albedo (updated); label updated."""
    dx, cy, ew, eh, tilt, openness, gaze, by, bl, arch, btilt, bthick, px = e
    ir_, ig, ib, br, bg, bb = colours
    zero, one = F32(0.0), F32(1.0)
    g = dx + gaze * ew * F32(0.35)  # gaze: both pupils move outward together (mirrored)
    ir = eh * F32(1.05)
    opened = one if openness > F32(0.05) else zero
    for j in range(label.shape[0]):
        x, y, fw, r, gr, b, lab = buf[0, j], buf[1, j], buf[2, j], buf[3, j], buf[4, j], buf[5, j], label[j]
        ax = abs(x)
        eye_label = np.uint8(L_EYE) if x > zero else np.uint8(R_EYE)
        on_skin = fw if lab == SKIN else zero
        # eye socket shadow and lid crease
        a = ellipse32(ax, y, dx, cy - eh * F32(0.4), ew * F32(1.5), eh * F32(2.4), px * F32(6.0)) * on_skin * F32(0.22)
        r, gr, b = r + (F32(0.25) - r) * a, gr + (F32(0.15) - gr) * a, b + (F32(0.12) - b) * a
        # local eye coordinates, tilted (outer corner up for positive tilt)
        tx = (ax - dx) / ew
        ty = (y - cy) / eh + tx * (tilt * F32(1.2))
        w2 = one - tx * tx
        upper = -openness * w2 - F32(0.05)
        lower = w2 * (F32(0.75) * max(openness, F32(0.15)) - F32(0.05) * (one - openness)) + F32(0.05)
        dist = max(max(upper - ty, ty - lower) * eh, (abs(tx) - one) * ew)
        eye = soft32(dist, px) * on_skin * opened
        r, gr, b = r + (F32(0.93) - r) * eye, gr + (F32(0.91) - gr) * eye, b + (F32(0.88) - b) * eye
        lab = eye_label if eye > F32(0.5) else lab
        a = ellipse32(ax, y, g, cy + eh * F32(0.05), ir, ir, px) * eye
        r, gr, b = r + (ir_ - r) * a, gr + (ig - gr) * a, b + (ib - b) * a
        pupil = ir * F32(0.45)
        a = ellipse32(ax, y, g, cy + eh * F32(0.05), pupil, pupil, px) * eye
        r, gr, b = r + (F32(0.03) - r) * a, gr + (F32(0.03) - gr) * a, b + (F32(0.03) - b) * a
        # highlights sit to the image's right on both eyes: unmirror, shift, mirror back
        glint = ir * F32(0.2)
        a = ellipse32(abs(x - ir * F32(0.3)), y, g, cy - eh * F32(0.25), glint, glint, px) * eye * F32(0.9)
        r, gr, b = r + (one - r) * a, gr + (one - gr) * a, b + (one - b) * a
        # lash line along the upper lid
        d = max(abs(ty - upper + F32(0.12)) * eh - F32(0.012), (abs(tx) - F32(1.08)) * ew)
        lash = soft32(d, px) * on_skin * F32(0.85)
        r, gr, b = r + (F32(0.06) - r) * lash, gr + (F32(0.04) - gr) * lash, b + (F32(0.04) - b) * lash
        lab = eye_label if lash * opened > F32(0.5) else lab
        # brow: an arched band tapering towards the outer end
        bx = (ax - dx) / bl
        yc = bx * bx * arch + by - arch - bx * (btilt * bl)
        thick = min(max(bx, zero), one) * (F32(-0.45) * bthick * F32(0.5)) + bthick * F32(0.5)
        d = max(abs(y - yc) - thick, (abs(bx) - one) * bl)
        brow = soft32(d, px) * fw * F32(0.95) if lab == SKIN else zero
        r, gr, b = r + (br - r) * brow, gr + (bg - gr) * brow, b + (bb - b) * brow
        lab = eye_label + np.uint8(2) if brow > F32(0.5) else lab  # L_BROW = L_EYE + 2, R_BROW = R_EYE + 2
        buf[3, j], buf[4, j], buf[5, j], label[j] = r, gr, b, lab


@geometry
def _eyes_brows(cv, ident, nz, hair):
    dx, cy = ident.eye_dx, ident.eye_y
    eh = ident.eye_h
    by = cy - eh - ident.brow_gap - 0.03 * nz.brow_raise
    top = by - ident.brow_arch - ident.brow_thick - 0.03
    z0 = _surface_z(ident, dx, cy)
    xo = dx + ident.brow_len * 1.1
    win = _window(cv, [(-xo, top, z0), (xo, cy + eh * 2.2, z0), (-xo, cy + eh * 2.2, z0 * 0.5), (xo, top, z0 * 0.5),
                       (-xo, top, z0 * 0.5), (xo, cy + eh * 2.2, z0 * 0.5), (-xo, cy + eh * 2.2, z0), (xo, top, z0)], 3)
    shape = (dx, cy, ident.eye_w, eh, ident.eye_tilt, 1.0 - nz.blink, nz.gaze,
             by, ident.brow_len, ident.brow_arch, ident.brow_tilt, ident.brow_thick)
    k = ident.brow_dark
    brow_col = (hair[0] * k + 0.05 * (1 - k), hair[1] * k + 0.04 * (1 - k), hair[2] * k + 0.03 * (1 - k))
    _eyes_brows_px(cv.maps, win, shape, (ident.iris_r, ident.iris_g, ident.iris_b), brow_col, cv.px)


@kernel
def _mouth_px(maps, w, my, mw, lip_up, lip_lo, smile, gap, px, lip, skin):
    albedo, _, label, _, _, _, hx, hy, front, _ = maps
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            x, y = hx[i, j], hy[i, j]
            ok = front[i, j] if label[i, j] == SKIN else 0.0
            t = x / mw
            t2 = t * t
            sw = math.sqrt(max(1.0 - t2, 0.0))
            yc = t2 * (-0.045 * smile) + my + 0.012 * smile  # the mouth line, bent by a smile
            bow = 1.0 - 0.35 * math.exp(-36.0 * t2)  # the cupid's bow dip
            up = yc - sw * bow * lip_up - (gap * 0.4 + 0.004)  # top of the upper lip
            lo = yc + sw * lip_lo + gap * 0.6 + 0.004  # bottom of the lower lip
            side_d = (abs(t) - 1.0) * mw
            lips = soft(max(max(up - y, y - lo), side_d), px) * ok
            if y < yc:
                paint(albedo, i, j, lips, lip[0] * 0.92, lip[1] * 0.92, lip[2] * 0.92)
                claim(label, i, j, lips, U_LIP)
            else:
                paint(albedo, i, j, lips, lip[0], lip[1], lip[2])
                claim(label, i, j, lips, L_LIP)
            if gap > 0:
                inner = soft(max(abs(y - (yc + gap * 0.1)) - sw * (gap * 0.5), side_d + 0.015), px) * ok
                paint(albedo, i, j, inner, 0.25, 0.06, 0.07)
                claim(label, i, j, inner, MOUTH)
                if y < yc - gap * 0.1:
                    paint(albedo, i, j, soft(abs(t) - 0.7, px) * inner, 0.9, 0.88, 0.82)  # teeth
            else:
                line = soft(max(abs(y - yc) - 0.004, side_d), px) * ok * 0.8
                paint(albedo, i, j, line, lip[0] * 0.45, lip[1] * 0.45, lip[2] * 0.45)
            if smile > 0.2:  # dimples, both sides at once
                a = ellipse(abs(x), y, mw + 0.025, my - 0.01, 0.008, 0.03, px) * ok * 0.4 * smile
                paint(albedo, i, j, a, skin[0] * 0.7, skin[1] * 0.7, skin[2] * 0.7)


@geometry
def _mouth(cv, ident, nz, skin):
    my, mw = ident.mouth_y, ident.mouth_w * (1 + 0.15 * nz.smile)
    gap = 0.085 * nz.mouth_open
    z0 = _surface_z(ident, 0.0, my)
    win = _window(cv, [(-mw - 0.03, my - ident.lip_up - 0.05, z0 * 0.7), (mw + 0.03, my + ident.lip_lo + gap + 0.04, z0 * 0.7),
                       (-mw - 0.03, my + ident.lip_lo + gap + 0.04, z0), (mw + 0.03, my - ident.lip_up - 0.05, z0)], 3)
    _mouth_px(cv.maps, win, my, mw, ident.lip_up, ident.lip_lo, nz.smile, gap, cv.px,
              (ident.lip_r, ident.lip_g, ident.lip_b), skin)


@kernel
def _nose_px(maps, w, bridge, tip, m, tip_r, tip_cy, tip_cz, wing_x, wing_y, under, px, skin):
    """The nose's two ellipsoids over the face, nostrils, then the wings on the cheeks."""
    albedo, nrm, label, _, pu, pv, hx, hy, front, depth = maps
    r, g, b = skin
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            u, v = pu[i, j], pv[i, j]
            best = depth[i, j] if under[label[i, j]] else -9.0  # the face under the nose
            nose_a = 0.0
            for k in range(2):
                surf = bridge if k == 0 else tip
                cov, s = ray(surf, u, v)
                a = cov if s > best and cov > 0.02 else 0.0
                if a > 0.5:
                    n = normal(surf, u, v, s)
                    set_normal(nrm, i, j, a, n[0], n[1], n[2])
                if a > 0:
                    best = s
                nose_a = max(nose_a, a)
                if k == 1 and a > 0.5:
                    # nostrils: dark crescents under the tip, seen when the head tilts up (both at once)
                    x, y, z = hit(m, u, v, s)
                    if z < tip_cz + tip_r * 0.6:
                        na = ellipse(abs(x), y, tip_r * 0.55, tip_cy + tip_r * 0.55, tip_r * 0.35, tip_r * 0.22, px)
                        paint(albedo, i, j, na * 0.8, r * 0.3, g * 0.3, b * 0.3)
            paint(albedo, i, j, nose_a * 0.9, r * 0.97, g * 0.97, b * 0.97)
            claim(label, i, j, nose_a, NOSE)
            # nose wings (alae): darker crescents beside the tip, painted on the cheek surface
            if label[i, j] == SKIN:
                ax, y = abs(hx[i, j]), hy[i, j]
                wing = ellipse(ax, y, wing_x, wing_y, tip_r * 0.62, tip_r * 0.7, px)
                hole = ellipse(ax, y, wing_x - tip_r * 0.12, wing_y - tip_r * 0.1, tip_r * 0.5, tip_r * 0.58, px)
                on_skin = front[i, j]
                paint(albedo, i, j, max(wing - hole, 0.0) * on_skin * 0.45, r * 0.55, g * 0.55, b * 0.55)
                claim(label, i, j, wing * on_skin, NOSE)


@geometry
def _nose(cv, ident, skin):
    """A bridge ellipsoid and a tip ellipsoid that protrude from the face: a real profile."""
    top = ident.eye_y + 0.02
    bottom = ident.eye_y + ident.nose_len
    zb = _surface_z(ident, 0.0, (top + bottom) / 2)
    zt = _surface_z(ident, 0.0, bottom)
    nd = ident.nose_depth
    tip_r = ident.nose_w * 0.5
    bridge = surface(cv, (0.0, (top + bottom) / 2 - 0.02, zb - nd * 0.9),
                     (ident.nose_w * 0.32, (bottom - top) / 2 + 0.01, nd * 1.45))
    tip_c = (0.0, bottom - tip_r * 0.75, zt + nd - tip_r * 1.6)
    tip = surface(cv, tip_c, (tip_r, tip_r * 0.85, tip_r * 1.6))
    reach = nd + 0.05
    win = _window(cv, [(-ident.nose_w, top, zb), (ident.nose_w, bottom + 0.03, zt + reach), (ident.nose_w, top, zb + reach),
                       (-ident.nose_w, bottom + 0.03, zt)], 3)
    _nose_px(cv.maps, win, bridge, tip, cv.M, tip_r, tip_c[1], tip_c[2], tip_r * 1.05, bottom - tip_r * 0.45,
             _UNDER_NOSE, cv.px, skin)


@kernel
def _hair_px(maps, w, surf, m, hl, px, style, ha_scale, r, g, b):
    """Hair: a shell over the cranium, cut by the hairline, with strands flowing from the
    parting (float32 row passes, see `pixel.py`)."""
    albedo, nrm, label, lit, pu, pv = maps[:6]
    c0, c1 = w[2], w[3]
    q, mm = surface32(surf), matrix32(m)
    a_, b_, c_, cy, line0, widow, recede, fringe, part, side, back = hl
    shape = (F32(a_), F32(b_), F32(c_), F32(cy), F32(line0), F32(widow), F32(recede), F32(fringe), F32(part),
             F32(side), F32(back), F32(px * 1.5), F32(ha_scale))
    colour = (F32(r), F32(g), F32(b))
    out = np.empty((3, c1 - c0), F32)
    for i in range(w[0], w[1]):
        u, v = pu[i, c0:c1], pv[i, c0:c1]
        _hair_row(u, v, q, mm, shape, style == CURLY, out)
        a, s, streak = out[0], out[1], out[2]
        for k in range(3):
            blend_shaded_row(albedo[k, i, c0:c1], a, colour[k], streak)
            put_normal_row(nrm[k, i, c0:c1], a, u, v, s, q[11 + 4 * k], q[12 + 4 * k], q[13 + 4 * k], q[14 + 4 * k])
        blend_row_to(lit[i, c0:c1], a, F32(0.9))
        claim_row(label[i, c0:c1], a, HAIR)


@kernel
def _hair_row(pu, pv, q, m, shape, curly, out):
    """One row of the hair shell: out[0] coverage, 1 depth, 2 streak (colour scale)."""
    a_, b_, c_, cy, line0, widow, recede, fringe, part, side, back, aa, ha_scale = shape
    one = F32(1.0)
    for j in range(out.shape[1]):
        u, v = pu[j], pv[j]
        cov, s = ray32(q, u, v)
        x, y, z = hit32(m, u, v, s)
        xn, yn, zn = x / a_, (y - cy) / b_, z / c_
        # the hairline: normalised y above which hair grows, per surface point
        x2 = xn * xn
        fr = x2 * recede + line0 - widow * exp_neg32(F32(-64.0) * x2)  # the widow's peak
        fr += clip32(one - F32(1.6) * abs(xn - part * F32(0.5))) * fringe
        wf = clip32((zn - F32(0.15)) * F32(2.4))  # the front of the head follows the hairline ...
        rest = clip32(F32(-2.5) * zn) * (back - side) + side  # ... the sides and the nape their own reach
        fr = (fr - rest) * wf + rest
        if curly:
            streak = one + F32(0.12) * sin32(sin32(yn * F32(31.0)) * F32(2.5) + xn * F32(38.0))
        else:
            streak = one + F32(0.06) * sin32(xn * F32(70.0) + yn * F32(12.0) + part * F32(10.0))
        out[0, j] = soft32((yn - fr) * b_, aa) * cov * ha_scale
        out[1, j] = s
        out[2, j] = streak


@geometry
def _hair(cv, ident, nz, hair, W):
    style = int(ident.hair_style)
    if style == BALD:
        return
    vol = ident.hair_volume if style != BUZZ else 0.012
    a, b, c = ident.head_w * (1 + vol), ident.head_h * (1 + vol * 0.8), ident.head_w * 1.15 * (1 + vol)
    centre = (0.0, CRANIUM_CY - vol * 0.3, -0.02)
    side = _HAIR_SIDE[style]
    hairline = (a, b, c, centre[1], (ident.hairline + nz.hair_shift - CRANIUM_CY) / ident.head_h,
                ident.widow_peak, ident.hair_recede, ident.fringe, ident.part, side, max(side, 0.6))
    _hair_px(cv.maps, W, surface(cv, centre, (a, b, c)), cv.M, hairline, cv.px, style,
             0.75 if style == BUZZ else 1.0, hair[0], hair[1], hair[2])


@kernel
def _glasses_px(maps, w, g, under, px, dark, frame):
    """Frames and lenses; both rims at once in mirrored coordinates |x|."""
    albedo, _, label, lit, _, _, hx, hy, front, _ = maps
    dx, cy, rw, rh, p, thick, kind = g
    m = min(rw, rh)
    inner = dx - rw
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            cls = label[i, j]
            if not under[cls]:
                continue
            ax, y, fw = abs(hx[i, j]), hy[i, j], front[i, j]
            # a superellipse per rim: round (p = 2) .. rectangular (p = 4.5)
            f = ((abs(ax - dx) / rw) ** p + (abs(y - cy) / rh) ** p) ** (1 / p)
            f = (f - 1.0) * m  # signed distance to the rim, roughly
            lens = soft(f, px) * fw
            rims = soft(abs(f) - thick * 0.5, px)
            bridge = soft(max(ax - (inner + 0.01), abs(y - (cy - rh * 0.45)) - thick * 0.5), px)
            temple = soft(max(dx + rw - ax, abs(y - (cy - rh * 0.5)) - thick * 0.6), px)
            total = max(rims, bridge, temple) * max(fw, temple)
            if kind == 2:  # sunglasses: as much of the eye as they darken is eyeglasses
                paint(albedo, i, j, lens * dark, 0.05, 0.06, 0.07)
                claim(label, i, j, lens * dark, EYE_G)
            else:
                paint(albedo, i, j, lens * 0.12, 0.8, 0.9, 0.95)
                claim(label, i, j, lens, EYE_G)
            paint_lit(albedo, lit, i, j, total, frame[0], frame[1], frame[2], 1.0)
            claim(label, i, j, total, EYE_G)


@geometry
def _glasses(cv, ident, nz):
    rw, rh = ident.eye_w * 1.75, ident.eye_h * 2.6 + 0.02
    cy = ident.eye_y + 0.005
    z0 = _surface_z(ident, ident.eye_dx, cy)
    win = _window(cv, [(-ident.head_w, cy - rh - 0.03, z0), (ident.head_w, cy + rh + 0.03, z0),
                       (-ident.head_w, cy + rh, 0.0), (ident.head_w, cy - rh, 0.0)], 3)
    frame = (0.08, 0.07, 0.07) if nz.glasses_round < 0.6 else (0.55, 0.45, 0.3)
    shape = (ident.eye_dx, cy, rw, rh, 2.0 + 2.5 * (1 - nz.glasses_round), 0.014, nz.glasses)
    _glasses_px(cv.maps, win, shape, _UNDER_GLASSES, cv.px, nz.glasses_dark, frame)


@kernel
def _hat_px(maps, w, surf, m, cy, b_, c_, line, px, r, g, bl):
    """A cap: a shell over the hair whose brim rises towards the back, with a darker band."""
    albedo, nrm, label, lit, pu, pv = maps[:6]
    for i in range(w[0], w[1]):
        for j in range(w[2], w[3]):
            u, v = pu[i, j], pv[i, j]
            cov, s = ray(surf, u, v)
            if cov <= 0.0:
                continue
            _, y, z = hit(m, u, v, s)
            yn = (y - cy) / b_ - (z * (-0.25 / c_) + line)  # below the brim: edge = line + 0.25 (1 - z / c)
            shade = 1.0 - 0.3 * soft(abs(yn + 0.07) * b_ - 0.03, px)
            a = soft(yn * b_, px) * cov
            paint_lit(albedo, lit, i, j, a, r * shade, g * shade, bl * shade, 0.9)
            claim(label, i, j, a, HAT)
            if a > 0.5:
                n = normal(surf, u, v, s)
                set_normal(nrm, i, j, a, n[0], n[1], n[2])


@geometry
def _hat(cv, ident, nz, W):
    vol = ident.hair_volume + 0.05
    a, b, c = ident.head_w * (1 + vol), ident.head_h * (1 + vol), ident.head_w * 1.15 * (1 + vol)
    centre = (0.0, CRANIUM_CY - 0.02, -0.02)
    line = (nz.hat_line - CRANIUM_CY) / ident.head_h + 0.25
    _hat_px(cv.maps, W, surface(cv, centre, (a, b, c)), cv.M, centre[1], b, c, line, cv.px, nz.hat_r, nz.hat_g, nz.hat_b)


# --------------------------------------------------------------------------- light and camera


@kernel
def _finish_px(maps, out, L, amb, tint, bank, ov, ou, noise, taps):
    """Light (Lambert plus ambient, scaled by how lit each pixel is), expose, add sensor
    noise, blur (separable, `taps` of one side, centre first; one tap: no blur), quantise.

    Written as whole-row passes without branches so that the compiler vectorises them."""
    albedo, nrm, _, lit = maps[:4]
    n = out.shape[0]
    lx, ly, lz = L
    diffuse, flat = 1.2 * (1 - amb), amb * 1.1 - 1.0
    shade = np.empty((n, n), np.float32)
    for i in range(n):
        sh, nx_, ny_, nz_, lt = shade[i], nrm[0, i], nrm[1, i], nrm[2, i], lit[i]
        for j in range(n):
            nx, ny, nz = nx_[j], ny_[j], nz_[j]
            lam = max((nx * lx + ny * ly + nz * lz) / math.sqrt(nx * nx + ny * ny + nz * nz + 1e-12), 0.0)
            sh[j] = 1.0 + lt[j] * (flat + diffuse * lam)
    img = albedo  # lit in place
    for k in range(3):
        tk = tint[k]
        for i in range(n):
            # the bank's row as a contiguous view (a (3, n, n) window of it would have strides
            # the compiler cannot know, and the pass would stay scalar)
            dst, src, sh, grain = img[k, i], albedo[k, i], shade[i], bank[k, ov + i, ou:ou + n]
            for j in range(n):
                dst[j] = src[j] * tk * sh[j] + grain[j] * noise
    r = len(taps) - 1
    if r > 0:  # along rows into `tmp`, then along columns back into `img`; edges repeat
        tmp = np.empty_like(img)
        pad = np.empty(n + 2 * r, np.float32)  # one row, padded by repeating its ends
        for k in range(3):
            for i in range(n):
                src, dst = img[k, i], tmp[k, i]
                for j in range(n + 2 * r):
                    pad[j] = src[min(max(j - r, 0), n - 1)]
                centre = pad[r:r + n]  # views, so every index below is provably >= 0: no
                for j in range(n):  # negative-index wraparound test, and the loops vectorise
                    dst[j] = taps[0] * centre[j]
                for t in range(1, r + 1):
                    w, left, right = taps[t], pad[r - t:r - t + n], pad[r + t:r + t + n]
                    for j in range(n):
                        dst[j] += w * (left[j] + right[j])
            for i in range(n):
                dst, mid = img[k, i], tmp[k, i]
                for j in range(n):
                    dst[j] = taps[0] * mid[j]
                for t in range(1, r + 1):
                    w, above, below = taps[t], tmp[k, max(i - t, 0)], tmp[k, min(i + t, n - 1)]
                    for j in range(n):
                        dst[j] += w * (above[j] + below[j])
    lo, hi, half = np.float32(0.0), np.float32(255.0), np.float32(0.5)
    for i in range(n):
        o, red, green, blue = out[i], img[0, i], img[1, i], img[2, i]
        for j in range(n):  # truncation after + 0.5: rounding
            o[j, 0] = np.uint8(min(max(red[j] + half, lo), hi))
            o[j, 1] = np.uint8(min(max(green[j] + half, lo), hi))
            o[j, 2] = np.uint8(min(max(blue[j] + half, lo), hi))


@lru_cache(maxsize=256)
def _blur_taps(sigma: float) -> np.ndarray:
    """One side of the discrete Gaussian of variance sigma^2 (Lindeberg's e^-t I_n(t), t =
    sigma^2): unlike a sampled Gaussian it keeps the variance right down to sigma 0.3, the
    calibrated nuisance's low end."""
    from scipy.special import ive

    if sigma <= 0:
        return np.ones(1, F32)
    taps = ive(np.arange(math.ceil(3 * sigma) + 2), sigma * sigma)
    return (taps / (taps[0] + 2 * taps[1:].sum())).astype(F32)  # float32: the blur vectorises twice as wide


@geometry
def _finish(cv, nz, bank, taps):
    """The uint8 (size, size, 3) image: lit, exposed, noisy, blurred, quantised."""
    size = cv.size
    az, el = math.radians(nz.light_azimuth), math.radians(nz.light_elevation)
    L = (math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el))
    tint = (255 * (1 + nz.light_tint) * nz.exposure, 255 * nz.exposure, 255 * (1 - nz.light_tint) * nz.exposure)
    out = np.empty((size, size, 3), np.uint8)
    ou, ov = int(nz.noise_u * (512 - size)), int(nz.noise_v * (512 - size))
    _finish_px(cv.maps, out, L, nz.light_ambient, tint, bank, ov, ou, nz.noise * 0.7 * 255, taps)
    return out

"""The renderer: one identity + one nuisance -> an RGB face and its segmentation map.

The head is a union of ellipsoids (cranium, jaw, nose bridge, nose tip) ray-cast exactly
under yaw and pitch (orthographic camera), so turning the head foreshortens the far side,
hides the far eye behind the nose and shows the ear: a 2.5-D warp rather than an image
rotation. Roll, crop jitter and zoom are a similarity on the image plane. Eyes, brows,
lips, moles, beard and glasses are painted in the head's own frontal coordinates (x, y) of
each ray's hit point, so they move with the surface. Hair and hats are shells slightly
larger than the cranium, cut by a hairline.

Speed (the world is rendered by the hundred thousand): everything is float32 numpy, every
layer is evaluated only inside the pixel window it can reach, and a render is a few hundred
array operations. At 112 px the arrays are small, so the cost is the number of numpy calls,
not their size; hence:

- geometry is folded into coefficients in plain Python first: a ray cast is one quadratic
  form in the view coordinates, a surface normal one linear form (left unnormalised until
  shading);
- features that come in mirror pairs (eyes, brows, nostrils, nose wings, cheek folds,
  dimples, lenses) are painted once, for both sides, in mirrored head coordinates |x|;
- Python floats, never ``np.float32(...)`` wrappers, as scalar operands (numpy keeps the
  array's float32 either way, and the wrapper costs more than the multiply).

Label map: CelebAMask-HQ's 19 classes, in `CLASSES` order. ``l_*`` is the subject's left
(the image's right in a frontal view), as in CelebAMask-HQ's annotation files.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from generators.procedural.params import BALD, BUZZ, CURLY, LONG, MEDIUM, TIED, Identity, Nuisance

CLASSES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
(BG, SKIN, NOSE, EYE_G, L_EYE, R_EYE, L_BROW, R_BROW, L_EAR, R_EAR,
 MOUTH, U_LIP, L_LIP, HAIR, HAT, EARRING, NECKLACE, NECK, CLOTH) = range(19)

ZOOM = 0.95  # head units per half image: framing close to insightface's aligned 112x112 crops
HEAD_V = 0.0  # where the cranium centre sits vertically (image units, down positive)
CRANIUM_CY = -0.05  # cranium centre in head coordinates (y down); the jaw hangs below it
F32 = np.float32

Window = tuple[slice, slice]

# classes the nose may cover (it protrudes over the face, never over hair or background)
_UNDER_NOSE = np.zeros(len(CLASSES), bool)
_UNDER_NOSE[[SKIN, L_EYE, R_EYE, U_LIP, L_LIP, L_BROW, R_BROW]] = True
# classes a pair of glasses may sit on
_UNDER_GLASSES = np.ones(len(CLASSES), F32)
_UNDER_GLASSES[[BG, HAIR, NECK, CLOTH]] = 0


def _col(*v: float) -> np.ndarray:
    """A colour as a (3, 1, 1) float32 array: it broadcasts against (3, h, w) albedo windows."""
    return np.asarray(v, F32).reshape(3, 1, 1)


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
    """Build the per-process tables now (call before forking workers: they inherit them)."""
    _bank()
    _axis(size)


try:  # the clip ufunc itself: np.clip's Python wrapper costs more than the work on small windows
    _uclip = np._core.umath.clip
except AttributeError:  # pragma: no cover - older numpy
    _uclip = np.clip


def _clip01(a: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] in place."""
    return _uclip(a, 0.0, 1.0, out=a)


def _cap_sides(dist: np.ndarray, tx: np.ndarray, half_w: float, reach: float) -> None:
    """End a band at |tx| = reach (tx in half-widths): the signed distance, in place, is at
    least the distance to the band's side ends."""
    side = np.abs(tx)
    side -= reach
    side *= half_w
    np.maximum(dist, side, out=dist)


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    """Coverage from a signed distance (negative inside), one pixel of anti-aliasing.

    Works in place: `d` must be a temporary."""
    d *= -1.0 / px
    d += 0.5
    return _clip01(d)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, px: float) -> np.ndarray:
    """Coverage of an axis-aligned ellipse, anti-aliased over about `px`."""
    k = 0.5 * min(rx, ry) / px  # soft((f - 1) * min(rx, ry) / 2, px) = clip(0.5 + k - k f)
    a = x - cx
    a *= 1.0 / rx
    a *= a
    b = y - cy
    b *= 1.0 / ry
    b *= b
    a += b
    a *= -k
    a += 0.5 + k
    return _clip01(a)


def _surface_z(ident: Identity, x: float, y: float) -> float:
    """Depth of the cranium's front surface at head point (x, y): for bounding boxes."""
    a, b, c = ident.head_w, ident.head_h, ident.head_w * 1.15
    t = 1 - (x / a) ** 2 - ((y - CRANIUM_CY) / b) ** 2
    return c * math.sqrt(max(t, 0.0))


class _Canvas:
    """Albedo, normals and labels being composited, plus the camera of one image.

    Normals are stored unnormalised (any positive scale of a surface gradient); `_finish`
    normalises once per pixel instead of once per layer.
    """

    def __init__(self, size: int, nz: Nuisance) -> None:
        self.size = size
        c = _axis(size)
        yaw, pitch, roll = (math.radians(v) for v in (nz.yaw, nz.pitch, nz.roll))
        self.zoom = ZOOM * nz.scale
        cr, sr = math.cos(roll), math.sin(roll)
        k = 1.0 / self.zoom
        du = c - nz.shift_x  # along columns
        dv = c - (nz.shift_y + HEAD_V)  # along rows
        # image -> de-rolled view coordinates (head centre at the origin): an outer sum of two axes
        self.pu = np.add.outer(dv * (sr * k), du * (cr * k))
        self.pv = np.add.outer(dv * (cr * k), du * (-sr * k))
        self.roll = (cr, sr)
        self.shift = (nz.shift_x, nz.shift_y + HEAD_V)
        cy, sy = math.cos(yaw), math.sin(yaw)
        cp, sp = math.cos(pitch), math.sin(pitch)
        # head -> view: pitch after yaw, R = Rx(pitch) Ry(yaw); plain Python, as every 3x3
        # here (a BLAS call costs more than the arithmetic and may wake BLAS threads)
        self.R: list[list[float]] = [[cy, 0.0, sy], [sp * sy, cp, -sp * cy], [-cp * sy, sp, cp * cy]]
        self.M: list[list[float]] = [list(col) for col in zip(*self.R)]  # view -> head: R^T
        self.px = 2.0 / (size * self.zoom)  # one pixel in head units
        self.albedo = np.empty((3, size, size), F32)  # channels first: cheap broadcasting of alphas
        self.normal = np.zeros((3, size, size), F32)
        self.normal[2] = 1.0
        self.label = np.zeros((size, size), np.uint8)
        self.lit = np.full((size, size), 0.25, F32)  # 1 where lighting applies fully
        self.head_depth: np.ndarray | None = None

    # ---------------------------------------------------------------- geometry helpers

    def window(self, pts: list[tuple[float, float, float]], margin: float = 2.0) -> Window | None:
        """The pixel box (row slice, col slice) covering the projections of head points."""
        (r00, r01, r02), (r10, r11, r12), _ = self.R
        us = [r00 * x + r01 * y + r02 * z for x, y, z in pts]
        vs = [r10 * x + r11 * y + r12 * z for x, y, z in pts]
        return self.box(us, vs, margin)

    def box(self, us: list[float], vs: list[float], margin: float = 2.0) -> Window | None:
        """The pixel box covering view-plane points (u, v) (head units, before roll)."""
        cr, sr = self.roll
        z, half = self.zoom, self.size / 2
        su, sv = self.shift
        cols = [((cr * u - sr * v) * z + su + 1) * half - 0.5 for u, v in zip(us, vs)]
        rows = [((sr * u + cr * v) * z + sv + 1) * half - 0.5 for u, v in zip(us, vs)]
        r0 = max(math.floor(min(rows) - margin), 0)
        r1 = min(math.ceil(max(rows) + margin) + 1, self.size)
        c0 = max(math.floor(min(cols) - margin), 0)
        c1 = min(math.ceil(max(cols) + margin) + 1, self.size)
        if r1 <= r0 or c1 <= c0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def raycast(self, win: Window, centre, axes) -> tuple[np.ndarray, np.ndarray]:
        """Front hit of the view rays in `win` with an ellipsoid: (coverage, depth s along the ray).

        A ray is h(s) = M (pu, pv, s). On the ellipsoid, sum(((h - c) / a)^2) = 1 reads
        A s^2 + B s + C = 0 with B linear in (pu, pv) and the discriminant B^2 - 4AC a
        quadratic form in them, so the per-pixel work is two short polynomials."""
        # per head axis i: q_i = m_i0 pu + m_i1 pv - c_i and the ray direction d_i = m_i2
        (m00, m01, d0), (m10, m11, d1), (m20, m21, d2) = self.M
        k0, k1, k2 = (1.0 / (ax * ax) for ax in axes)
        c0_, c1_, c2_ = centre
        w0, w1, w2 = k0 * d0, k1 * d1, k2 * d2
        A = w0 * d0 + w1 * d1 + w2 * d2
        bu = 2 * (w0 * m00 + w1 * m10 + w2 * m20)
        bv = 2 * (w0 * m01 + w1 * m11 + w2 * m21)
        b0 = -2 * (w0 * c0_ + w1 * c1_ + w2 * c2_)
        cuu = k0 * m00 * m00 + k1 * m10 * m10 + k2 * m20 * m20
        cuv = 2 * (k0 * m00 * m01 + k1 * m10 * m11 + k2 * m20 * m21)
        cvv = k0 * m01 * m01 + k1 * m11 * m11 + k2 * m21 * m21
        cu = -2 * (k0 * m00 * c0_ + k1 * m10 * c1_ + k2 * m20 * c2_)
        cv = -2 * (k0 * m01 * c0_ + k1 * m11 * c1_ + k2 * m21 * c2_)
        c0 = k0 * c0_ * c0_ + k1 * c1_ * c1_ + k2 * c2_ * c2_ - 1
        A4 = 4 * A
        pu, pv = self.pu[win], self.pv[win]
        # disc = pu (e_uu pu + e_uv pv + e_u) + pv (e_vv pv + e_v) + e_0
        disc = pu * (bu * bu - A4 * cuu)
        disc += pv * (2 * bu * bv - A4 * cuv)
        disc += 2 * bu * b0 - A4 * cu
        disc *= pu
        t = pv * (bv * bv - A4 * cvv)
        t += 2 * bv * b0 - A4 * cv
        t *= pv
        disc += t
        disc += b0 * b0 - A4 * c0
        cov = disc * (axes[0] * axes[1] * axes[2] / 8.0 / self.px)  # ~ signed distance to the outline, in pixels
        cov += 0.5
        _clip01(cov)
        B = pu * bu
        B += pv * bv
        B += b0
        np.maximum(disc, 0.0, out=disc)
        np.sqrt(disc, out=disc)
        disc -= B
        disc *= 0.5 / A
        return cov, disc

    def hit(self, win: Window, s: np.ndarray) -> list[np.ndarray]:
        """Head-space (x, y, z) of the points at depth `s` along the rays of `win`."""
        pu, pv = self.pu[win], self.pv[win]
        out = []
        for m0, m1, m2 in self.M:
            h = pu * m0
            h += pv * m1
            h += s * m2
            out.append(h)
        return out

    def normal_coef(self, centre, axes) -> np.ndarray:
        """(3, 4) K with view normal = K @ (pu, pv, s, 1): the ellipsoid's gradient, rotated."""
        R = self.R
        k = [1.0 / (ax * ax) for ax in axes]
        rows = []
        for j in range(3):
            rk = [R[j][i] * k[i] for i in range(3)]  # row j of R diag(k); M = R^T
            rows.append([rk[0] * R[m][0] + rk[1] * R[m][1] + rk[2] * R[m][2] for m in range(3)]
                        + [-(rk[0] * centre[0] + rk[1] * centre[1] + rk[2] * centre[2])])
        return np.array(rows, F32).reshape(3, 4, 1, 1)

    def normals(self, win: Window, s: np.ndarray, K: np.ndarray) -> np.ndarray:
        """(3, h, w) unnormalised view normals K @ (pu, pv, s, 1) (see `normal_coef`)."""
        n = K[:, 0] * self.pu[win]
        n += K[:, 1] * self.pv[win]
        n += K[:, 2] * s
        n += K[:, 3]
        return n

    # ---------------------------------------------------------------- compositing

    def paint(self, win: Window, alpha: np.ndarray, rgb: np.ndarray, label=None, lit: float | None = None) -> None:
        """Alpha-composite a colour ((3, 1, 1) or (3, h, w)) and claim the label where alpha > 1/2."""
        alb = self.albedo[:, win[0], win[1]]
        t = rgb - alb
        t *= alpha
        alb += t
        if label is not None:
            self.claim(win, alpha, label)
        if lit is not None:
            lt = self.lit[win]
            t = lit - lt
            t *= alpha
            lt += t

    def claim(self, win: Window, alpha: np.ndarray, label) -> None:
        """label := `label` (a class, or a uint8 array of classes shaped like alpha) where alpha > 1/2."""
        np.putmask(self.label[win], alpha > 0.5, label)

    def set_normal(self, win: Window, alpha: np.ndarray, n: np.ndarray) -> None:
        """Normals := n ((3, h, w), overwritten) where alpha > 1/2."""
        dst = self.normal[:, win[0], win[1]]
        n -= dst
        n *= alpha > 0.5
        dst += n


# --------------------------------------------------------------------------- the scene


def render(ident: Identity, nz: Nuisance, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (size, size, 3) RGB, uint8 (size, size) class indices)."""
    cv = _Canvas(size, nz)
    age = ident.base_age + nz.age_delta
    grey = min(max((age - 42) / 35, 0.0), 0.85)
    hair_rgb = _col(ident.hair_r, ident.hair_g, ident.hair_b) * (1 - grey) + _col(0.72, 0.72, 0.70) * grey
    skin = _col(ident.skin_r, ident.skin_g, ident.skin_b)
    yaw_s = math.sin(math.radians(nz.yaw))

    _background(cv, nz)
    _cloth_neck(cv, ident, nz, skin)
    if ident.hair_style == LONG:
        _long_hair(cv, ident, hair_rgb)
    if ident.hair_style == TIED:
        _bun(cv, ident, hair_rgb)
    ears = _ears(cv, ident, nz)
    for ear in ears:
        if not ear["near"]:
            _paint_ear(cv, ear, skin)

    W = _head_window(cv, ident)
    if W is None:
        raise RuntimeError("head outside the image")  # cannot happen with the framing above
    hx, hy, front = _head(cv, ident, skin, W)
    _face_details(cv, ident, hx, hy, front, skin, age)
    _eyes_brows(cv, ident, nz, hx, hy, front, hair_rgb)
    _mouth(cv, ident, nz, hx, hy, front, skin)
    _nose(cv, ident, skin, hx, hy, front)
    for ear in ears:
        if ear["near"]:
            _paint_ear(cv, ear, skin)
    _hair(cv, ident, nz, hair_rgb, W)
    if ident.earrings:
        for ear in ears:
            if ear["near"] or abs(yaw_s) < 0.3:
                _earring(cv, ear)
    if nz.glasses:
        _glasses(cv, ident, nz, hx, hy, front)
    if nz.hat:
        _hat(cv, ident, nz, W)
    return _finish(cv, nz), cv.label


# --------------------------------------------------------------------------- layers


def _background(cv: _Canvas, nz: Nuisance) -> None:
    """Flat, vertical gradient or soft blobs; all separable, so built from 1-D profiles."""
    c = _axis(cv.size)
    c1 = _col(nz.bg_r, nz.bg_g, nz.bg_b)
    dc = _col(nz.bg2_r, nz.bg2_g, nz.bg2_b) - c1
    if nz.background == 0:
        cv.albedo[:] = c1
    elif nz.background == 1:
        rows = c1[:, :, 0] + dc[:, :, 0] * (c * 0.5 + 0.5)  # (3, size): one colour per row
        cv.albedo[:] = rows[:, :, None]
    else:
        t = np.multiply.outer(np.sin(c * 2.3 + nz.noise_v * 6), np.sin(c * 3.1 + nz.noise_u * 6))
        t *= 0.5
        t += 0.5
        np.multiply(dc, t, out=cv.albedo)
        cv.albedo += c1


def _rows_below(cv: _Canvas, v0: float) -> Window | None:
    """The rows holding any pixel with pv > v0 (pv grows down the rows: |roll| < 90 degrees)."""
    pv = cv.pv
    # pv is linear along a row, so its largest value sits at one end of it
    r0 = min(int(np.searchsorted(pv[:, 0], v0, "right")), int(np.searchsorted(pv[:, -1], v0, "right")))
    if r0 >= cv.size:
        return None
    return slice(r0, cv.size), slice(0, cv.size)


def _cloth_neck(cv: _Canvas, ident: Identity, nz: Nuisance, skin: np.ndarray) -> None:
    yaw_s = math.sin(math.radians(nz.yaw))
    un = -0.12 * yaw_s  # the neck's axis sits behind the head centre
    px = cv.px
    rn = ident.jaw_w * 0.78
    # neck: a vertical cylinder below the jaw
    win = cv.box([un - rn, un + rn, un - rn, un + rn], [0.2, 0.2, 3.0, 3.0], 2)
    if win is not None:
        pu, pv = cv.pu[win], cv.pv[win]
        du = pu - un
        neck = _soft(np.abs(du) - rn, px)
        neck *= _soft(0.2 - pv, px)
        cv.paint(win, neck, skin * 0.93, NECK, lit=1.0)
        nx = du * (1 / rn)
        _uclip(nx, -1.0, 1.0, out=nx)
        nz_ = 1.0 - nx * nx
        np.maximum(nz_, 0.0, out=nz_)
        np.sqrt(nz_, out=nz_)
        n = np.empty((3,) + nx.shape, F32)
        n[0], n[1], n[2] = nx, 0.25, nz_
        cv.set_normal(win, neck, n)
    # cloth: shoulders sloping away from a neckline
    base = 1.02 + 0.12 * (ident.head_h - 1)
    win = _rows_below(cv, base - 0.12 * 1.2 - 2 * px)
    if win is None:
        return
    du = cv.pu[win] - un
    g = du * 2.6
    g *= g
    g *= -1.0
    top = np.exp(g)
    top *= 0.25
    top += base
    adu = np.abs(du)
    np.minimum(adu, 1.2, out=adu)
    adu *= 0.12
    top -= adu
    top -= cv.pv[win]
    cloth = _soft(top, px)
    cv.paint(win, cloth, _col(nz.cloth_r, nz.cloth_g, nz.cloth_b), CLOTH, lit=0.7)


def _long_hair(cv: _Canvas, ident: Identity, hair: np.ndarray) -> None:
    """A curtain of hair behind the head, down to the shoulders."""
    w = ident.head_w * (1.0 + ident.hair_volume)
    half = w * (1.02 + 0.08 * 0.2) + cv.px * 2
    win = cv.box([-half, half, -half, half], [-0.2, -0.2, 1.35, 1.35], 2)
    if win is None:
        return
    pu, pv = cv.pu[win], cv.pv[win]
    d = pv * (0.08 * w)
    d += np.abs(pu)
    d -= 1.02 * w
    a = _soft(d, cv.px)
    a *= _soft(pv - 1.35, cv.px)
    a *= _soft(-0.2 - pv, cv.px)
    cv.paint(win, a, hair * 0.8, HAIR, lit=0.6)


def _bun(cv: _Canvas, ident: Identity, hair: np.ndarray) -> None:
    c = (0.0, CRANIUM_CY - 0.55 * ident.head_h, -0.55 * ident.head_w)
    r = 0.25
    win = cv.window([(c[0] + du, c[1] + dv, c[2]) for du, dv in ((r, r), (-r, -r), (r, -r), (-r, r))], 3)
    if win is None:
        return
    cov, _ = cv.raycast(win, c, (r, r * 0.9, r))
    cv.paint(win, cov, hair, HAIR, lit=0.8)


def _ears(cv: _Canvas, ident: Identity, nz: Nuisance) -> list[dict]:
    yaw_s = math.sin(math.radians(nz.yaw))
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = cv.R
    out = []
    for side, label in ((1.0, L_EAR), (-1.0, R_EAR)):
        p = (side * (ident.head_w + 0.015), ident.ear_y, -0.06)
        v = (r00 * p[0] + r01 * p[1] + r02 * p[2], r10 * p[0] + r11 * p[1] + r12 * p[2],
             r20 * p[0] + r21 * p[1] + r22 * p[2])
        toward = v[2] > 0.08 * ident.head_w  # the ear has swung toward the camera
        h = ident.ear_size / 2
        w = ident.ear_size * (0.16 + 0.24 * abs(yaw_s)) if toward else ident.ear_size * 0.16 * max(1 - abs(yaw_s) * 1.6, 0.15)
        # centre pushed outward so a frontal ear sticks out of the silhouette
        u0 = v[0] + (0 if toward else side * w * 0.6 * (1 - abs(yaw_s)))
        out.append({"u": u0, "v": v[1], "w": max(w, 0.035), "h": h, "label": label, "near": toward})
    return out


def _paint_ear(cv: _Canvas, ear: dict, skin: np.ndarray) -> None:
    u, v = ear["u"], ear["v"]
    rad = max(ear["w"], ear["h"]) + cv.px  # the ear's extent, plus a pixel
    win = cv.box([u - rad, u + rad], [v - rad, v + rad], 2)
    if win is None:
        return
    pu, pv = cv.pu[win], cv.pv[win]
    a = _ellipse(pu, pv, u, v + ear["h"] * 0.05, ear["w"], ear["h"], cv.px)
    cv.paint(win, a, skin * 0.9, ear["label"], lit=0.9)
    inner = _ellipse(pu, pv, u, v, ear["w"] * 0.55, ear["h"] * 0.6, cv.px)
    inner *= a
    inner *= 0.5
    cv.paint(win, inner, skin * 0.6)


def _earring(cv: _Canvas, ear: dict) -> None:
    u, v = ear["u"], ear["v"] + ear["h"] * 1.05
    win = cv.box([u - 0.05, u + 0.05], [v - 0.05, v + 0.05], 2)
    if win is None:
        return
    a = _ellipse(cv.pu[win], cv.pv[win], u, v, 0.028, 0.028, cv.px)
    cv.paint(win, a, _col(0.85, 0.75, 0.35), EARRING, lit=1.0)


def _head_window(cv: _Canvas, ident: Identity) -> Window | None:
    """Pixels the head, its hair and any hat can reach: the full-size ray casts stay inside."""
    v = max(ident.hair_volume, 0.02) + 0.07
    a, b, c = ident.head_w * (1 + v), ident.head_h * (1 + v), ident.head_w * 1.15 * (1 + v)
    pts = [(sx * a, CRANIUM_CY + sy * b, sz * c) for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    pts += [(sx * ident.jaw_w, ident.chin_y + 0.02, sz * ident.jaw_w * 1.2) for sx in (-1, 1) for sz in (-1, 1)]
    return cv.window(pts, 2)


def _head(cv: _Canvas, ident: Identity, skin: np.ndarray, W: Window):
    """Cranium and jaw: skin, normals, depth. Returns full-size head x, y and the front mask.

    Outside `W` the head coordinates are parked far from every feature (y = 9) and the front
    mask is 0, so feature windows may poke out of `W` safely."""
    a, b, c = ident.head_w, ident.head_h, ident.head_w * 1.15
    cran_c, cran_ax = (0.0, CRANIUM_CY, 0.0), (a, b, c)
    jb = ident.jaw_h
    jaw_c = (0.0, ident.chin_y - jb, 0.02)
    jaw_ax = (ident.jaw_w, jb, ident.jaw_w * 1.2)
    cov1, s1 = cv.raycast(W, cran_c, cran_ax)
    cov2, s2 = cv.raycast(W, jaw_c, jaw_ax)
    behind = cov1 <= 0.5
    jaw_front = (s2 > s1) & (cov2 > 0.5) | behind
    s = np.where(jaw_front, s2, s1)
    cov = np.maximum(cov1, cov2)
    # blend the two surfaces' gradients near the seam so the jaw line does not read as a crease
    w = s2 - s1
    w *= 12.0
    w += 0.5
    _clip01(w)
    np.maximum(w, behind, out=w)
    K1 = cv.normal_coef(cran_c, cran_ax)
    K2 = cv.normal_coef(jaw_c, jaw_ax)
    n = cv.normals(W, s, K1)
    dn = cv.normals(W, s, K2 - K1)
    dn *= w
    n += dn
    cv.set_normal(W, cov, n)
    S = np.full((cv.size, cv.size), -9.0, F32)
    S[W] = s
    cv.head_depth = S
    x, y, z = cv.hit(W, s)
    # skin albedo with the identity's fixed texture (looked up in head coordinates)
    iu = (x * 60 + ident.noise_u * 300).astype(np.intp)
    iv = (y * 60 + ident.noise_v * 300).astype(np.intp)
    iu &= 511
    iv &= 511
    iv <<= 9
    iv |= iu
    tex = _bank()[0].ravel().take(iv)
    tex *= ident.skin_noise * 0.3
    tex += 1.0
    col = skin * tex
    # blush on the cheeks, darker towards the outline (a cheap ambient occlusion)
    cheek = np.abs(x)
    cheek -= 0.33
    cheek *= 5.0
    cheek *= cheek
    t = y - 0.28
    t *= 4.5
    t *= t
    cheek += t
    np.subtract(1.0, cheek, out=cheek)
    _clip01(cheek)
    cheek *= ident.blush
    col += _col(0.5, -0.15, -0.1) * cheek
    cv.paint(W, cov, col, SKIN, lit=1.0)
    # full-size head coordinates; pixels outside the window lie far from every feature
    X = np.zeros((cv.size, cv.size), F32)
    Y = np.full((cv.size, cv.size), 9.0, F32)
    front = np.zeros((cv.size, cv.size), F32)
    X[W], Y[W] = x, y
    z -= 0.05
    z *= 8.0
    front[W] = _clip01(z)  # face features live on the front half only
    return X, Y, front


def _face_details(cv: _Canvas, ident: Identity, x, y, front, skin, age: float) -> None:
    px = cv.px
    # moles
    for mx, my, mr in zip(ident.mole_x, ident.mole_y, ident.mole_r):
        z0 = _surface_z(ident, mx, my)
        win = cv.window([(mx - mr, my - mr, z0), (mx + mr, my + mr, z0)], 2)
        if win is None:
            continue
        a = _ellipse(x[win], y[win], mx, my, mr, mr, px)
        a *= front[win]
        a *= cv.label[win] == SKIN
        a *= 0.85
        cv.paint(win, a, skin * 0.45)
    # age: forehead lines and nasolabial folds
    wr = min(max((age - 32) / 40, 0.0), 1.0)
    if wr > 0:
        _forehead_lines(cv, ident, x, y, front, skin, wr)
        _folds(cv, ident, x, y, front, skin, wr)
    if ident.beard:
        _beard(cv, ident, x, y, front)


def _forehead_lines(cv: _Canvas, ident: Identity, x, y, front, skin, wr: float) -> None:
    top = ident.hairline + 0.08
    bottom = ident.eye_y - 0.13
    win = cv.window([(-0.4, top, _surface_z(ident, 0.4, top)), (0.4, ident.eye_y - 0.12, _surface_z(ident, 0.0, 0.0)),
                     (0.4, top, _surface_z(ident, 0.4, top))], 2)
    if win is None:
        return
    xw, yw = x[win], y[win]
    band = np.abs(xw)
    band *= -2.2
    band += 1.0
    _clip01(band)
    band *= (yw > top) & (yw < bottom)
    lines = np.sin(yw * 90.0)
    np.maximum(lines, 0.0, out=lines)
    lines *= lines
    lines *= lines
    band *= lines
    band *= front[win]
    band *= 0.35 * wr
    cv.paint(win, band, skin * 0.6)


def _folds(cv: _Canvas, ident: Identity, x, y, front, skin, wr: float) -> None:
    """Nasolabial folds, both sides at once in mirrored coordinates |x|."""
    x0, y0 = ident.nose_w * 0.75, ident.eye_y + ident.nose_len
    x1, y1 = ident.mouth_w * 1.05, ident.mouth_y + 0.03
    z0, z1 = _surface_z(ident, x0, y0), _surface_z(ident, x1, y1)
    win = cv.window([(x0, y0, z0), (x1 + 0.04, y1, z1), (-x0, y0, z0), (-x1 - 0.04, y1, z1)], 2)
    if win is None:
        return
    ax, yw = np.abs(x[win]), y[win]
    t = yw - y0
    t *= 1 / (y1 - y0)
    _clip01(t)
    xl = 1.0 - t
    xl *= 0.03
    xl += x1 - x0
    xl *= t
    xl += x0
    d = ax - xl
    np.abs(d, out=d)
    d -= 0.008
    a = _soft(d, cv.px)
    a *= (yw > y0) & (yw < y1)
    a *= front[win]
    a *= 0.45 * wr
    cv.paint(win, a, skin * 0.62)


def _beard(cv: _Canvas, ident: Identity, x, y, front) -> None:
    """Facial hair: shaded region on the lower face, labelled skin as CelebAMask-HQ does."""
    px = cv.px
    hair = _col(ident.hair_r, ident.hair_g, ident.hair_b) * 0.9
    win = cv.window([(-0.7, ident.mouth_y - 0.15, 0.1), (0.7, ident.chin_y + 0.05, 0.1)], 3)
    if win is None:
        return
    xw, yw = x[win], y[win]
    my = ident.mouth_y
    k = ident.beard
    if k == 1:  # stubble
        a = _soft(my - 0.08 - yw, px * 4)
        a *= 0.45
    elif k == 2:  # moustache
        d = yw - (my - ident.lip_up - 0.035)
        np.abs(d, out=d)
        d -= 0.028
        a = _soft(d, px)
        a *= _soft(np.abs(xw) - ident.mouth_w * 1.1, px)
    else:
        if k == 3:  # goatee
            a = _soft(np.abs(xw) - ident.mouth_w * 0.8, px)
            a *= _soft(my - 0.07 - yw, px)
        else:  # full beard
            d = np.abs(xw)
            d *= 0.15
            d += yw
            np.subtract(my - 0.1, d, out=d)
            a = _soft(d, px * 2)
        # keep the lips clear: no hair inside the mouth zone below the upper lip
        zx = xw * (1 / (ident.mouth_w * 1.15))
        zx *= zx
        zy = yw - my
        zy *= 1 / 0.085
        zy *= zy
        zx += zy
        a *= (zx >= 1) | (yw < my - ident.lip_up - 0.01)
    a *= front[win]
    a *= ident.beard_density
    a *= cv.label[win] == SKIN
    cv.paint(win, a, hair)


def _eyes_brows(cv: _Canvas, ident: Identity, nz: Nuisance, x, y, front, hair) -> None:
    """Both eyes and brows in one window, in mirrored coordinates: the subject's left eye is
    at x = +eye_dx, so with ax = |x| every formula below serves both sides."""
    px = cv.px
    iris = _col(ident.iris_r, ident.iris_g, ident.iris_b)
    openness = 1.0 - nz.blink
    brow_col = hair * ident.brow_dark + _col(0.05, 0.04, 0.03) * (1 - ident.brow_dark)
    dx, cy = ident.eye_dx, ident.eye_y
    ew, eh = ident.eye_w, ident.eye_h
    by = cy - eh - ident.brow_gap - 0.03 * nz.brow_raise
    top = by - ident.brow_arch - ident.brow_thick - 0.03
    z0 = _surface_z(ident, dx, cy)
    xo = dx + ident.brow_len * 1.1
    win = cv.window([(-xo, top, z0), (xo, cy + eh * 2.2, z0), (-xo, cy + eh * 2.2, z0 * 0.5), (xo, top, z0 * 0.5),
                     (-xo, top, z0 * 0.5), (xo, cy + eh * 2.2, z0 * 0.5), (-xo, cy + eh * 2.2, z0), (xo, top, z0)], 3)
    if win is None:
        return
    xw, yw, fw = x[win], y[win], front[win]
    ax = np.abs(xw)
    left = (xw > 0).view(np.uint8)
    eye_label = R_EYE - left  # uint8 array: L_EYE where x > 0
    on_skin = (cv.label[win] == SKIN) * fw
    # eye socket shadow and lid crease
    sock = _ellipse(ax, yw, dx, cy - eh * 0.4, ew * 1.5, eh * 2.4, px * 6)
    sock *= on_skin
    sock *= 0.22
    cv.paint(win, sock, _col(0.25, 0.15, 0.12))
    # local eye coordinates, tilted (outer corner up for positive tilt)
    tx = ax - dx
    tx *= 1 / ew
    ty = yw - cy
    ty *= 1 / eh
    ty += tx * (ident.eye_tilt * 1.2)
    w2 = 1.0 - tx * tx
    upper = w2 * -openness
    upper -= 0.05
    lower = w2 * (0.75 * max(openness, 0.15) - 0.05 * (1 - openness))
    lower += 0.05
    dist = np.maximum(upper - ty, ty - lower)
    dist *= eh
    _cap_sides(dist, tx, ew, 1.0)
    eye = _soft(dist, px)
    eye *= on_skin
    if openness > 0.05:
        cv.paint(win, eye, _col(0.93, 0.91, 0.88), eye_label)
        g = dx + nz.gaze * ew * 0.35  # gaze: both pupils move outward together (mirrored)
        ir = eh * 1.05
        ia = _ellipse(ax, yw, g, cy + eh * 0.05, ir, ir, px)
        ia *= eye
        cv.paint(win, ia, iris)
        pa = _ellipse(ax, yw, g, cy + eh * 0.05, ir * 0.45, ir * 0.45, px)
        pa *= eye
        cv.paint(win, pa, _col(0.03, 0.03, 0.03))
        # highlights sit to the image's right on both eyes: unmirror, shift, mirror back
        hx = xw - ir * 0.3
        np.abs(hx, out=hx)
        ha = _ellipse(hx, yw, g, cy - eh * 0.25, ir * 0.2, ir * 0.2, px)
        ha *= eye
        ha *= 0.9
        cv.paint(win, ha, _col(1, 1, 1))
    # lash line along the upper lid
    d = ty - upper
    d += 0.12
    np.abs(d, out=d)
    d *= eh
    d -= 0.012
    _cap_sides(d, tx, ew, 1.08)
    lash = _soft(d, px)
    lash *= on_skin
    lash *= 0.85
    cv.paint(win, lash, _col(0.06, 0.04, 0.04), eye_label if openness > 0.05 else None)
    # brow: an arched band tapering towards the outer end
    bl = ident.brow_len
    bx = ax - dx
    bx *= 1 / bl
    yc = bx * bx
    yc *= ident.brow_arch
    yc += by - ident.brow_arch
    yc -= bx * (ident.brow_tilt * bl)
    thick = np.clip(bx, 0.0, 1.0)
    thick *= -0.45 * ident.brow_thick * 0.5
    thick += ident.brow_thick * 0.5
    d = yw - yc
    np.abs(d, out=d)
    d -= thick
    np.abs(bx, out=bx)
    bx -= 1.0
    bx *= bl
    np.maximum(d, bx, out=d)
    brow = _soft(d, px)
    brow *= cv.label[win] == SKIN
    brow *= fw
    brow *= 0.95
    cv.paint(win, brow, brow_col, eye_label + 2)  # L_BROW = L_EYE + 2, R_BROW = R_EYE + 2


def _mouth(cv: _Canvas, ident: Identity, nz: Nuisance, x, y, front, skin) -> None:
    px = cv.px
    my, mw = ident.mouth_y, ident.mouth_w * (1 + 0.15 * nz.smile)
    gap = 0.085 * nz.mouth_open
    z0 = _surface_z(ident, 0, my)
    win = cv.window([(-mw - 0.03, my - ident.lip_up - 0.05, z0 * 0.7), (mw + 0.03, my + ident.lip_lo + gap + 0.04, z0 * 0.7),
                     (-mw - 0.03, my + ident.lip_lo + gap + 0.04, z0), (mw + 0.03, my - ident.lip_up - 0.05, z0)], 3)
    if win is None:
        return
    xw, yw = x[win], y[win]
    ok = (cv.label[win] == SKIN) * front[win]
    t = xw * (1 / mw)
    t2 = t * t
    w2 = 1.0 - t2
    np.maximum(w2, 0.0, out=w2)
    sw = np.sqrt(w2, out=w2)
    yc = t2 * (-0.045 * nz.smile)
    yc += my + 0.012 * nz.smile
    bow = t2 * -36.0  # the cupid's bow dip: 1 - 0.35 exp(-(6 t)^2)
    np.exp(bow, out=bow)
    bow *= -0.35
    bow += 1.0
    up = sw * bow
    up *= -ident.lip_up
    up += yc
    up -= gap * 0.4 + 0.004  # top of the upper lip
    lo = sw * ident.lip_lo
    lo += yc
    lo += gap * 0.6 + 0.004  # bottom of the lower lip
    side_d = np.abs(t)
    side_d -= 1.0
    side_d *= mw
    up -= yw
    lo = np.subtract(yw, lo, out=lo)
    d = np.maximum(up, lo, out=up)
    np.maximum(d, side_d, out=d)
    lips = _soft(d, px)
    lips *= ok
    lip = _col(ident.lip_r, ident.lip_g, ident.lip_b)
    above = yw < yc
    cv.paint(win, lips * above, lip * 0.92, U_LIP)
    cv.paint(win, lips * ~above, lip, L_LIP)
    if gap > 0:
        d = yw - (yc + gap * 0.1)
        np.abs(d, out=d)
        d -= sw * (gap * 0.5)
        np.maximum(d, side_d + 0.015, out=d)
        inner = _soft(d, px)
        inner *= ok
        cv.paint(win, inner, _col(0.25, 0.06, 0.07), MOUTH)
        teeth = _soft(np.abs(t) - 0.7, px)
        teeth *= inner
        teeth *= yw < yc - gap * 0.1
        cv.paint(win, teeth, _col(0.9, 0.88, 0.82))
    else:
        d = yw - yc
        np.abs(d, out=d)
        d -= 0.004
        np.maximum(d, side_d, out=d)
        line = _soft(d, px)
        line *= ok
        line *= 0.8
        cv.paint(win, line, lip * 0.45)
    # dimples of a smile (both sides at once)
    if nz.smile > 0.2:
        a = _ellipse(np.abs(xw), yw, mw + 0.025, my - 0.01, 0.008, 0.03, px)
        a *= ok
        a *= 0.4 * nz.smile
        cv.paint(win, a, skin * 0.7)


def _nose(cv: _Canvas, ident: Identity, skin, hx, hy, front) -> None:
    """A bridge ellipsoid and a tip ellipsoid that protrude from the face: a real profile."""
    top = ident.eye_y + 0.02
    bottom = ident.eye_y + ident.nose_len
    zb = _surface_z(ident, 0.0, (top + bottom) / 2)
    zt = _surface_z(ident, 0.0, bottom)
    nd = ident.nose_depth
    tip_r = ident.nose_w * 0.5
    bridge_c = (0.0, (top + bottom) / 2 - 0.02, zb - nd * 0.9)
    bridge_ax = (ident.nose_w * 0.32, (bottom - top) / 2 + 0.01, nd * 1.45)
    tip_c = (0.0, bottom - tip_r * 0.75, zt + nd - tip_r * 1.6)
    tip_ax = (tip_r, tip_r * 0.85, tip_r * 1.6)
    reach = nd + 0.05
    win = cv.window([(-ident.nose_w, top, zb), (ident.nose_w, bottom + 0.03, zt + reach), (ident.nose_w, top, zb + reach),
                     (-ident.nose_w, bottom + 0.03, zt)], 3)
    if win is None:
        return
    lab = cv.label[win]
    best_s = np.where(_UNDER_NOSE[lab], cv.head_depth[win], -9.0)  # the face under the nose
    nose_a = np.zeros(best_s.shape, F32)
    normals = cv.normal[:, win[0], win[1]]
    for centre, axes in ((bridge_c, bridge_ax), (tip_c, tip_ax)):
        cov, s = cv.raycast(win, centre, axes)
        a_ = cov * ((s > best_s) & (cov > 0.02))
        n = cv.normals(win, s, cv.normal_coef(centre, axes))
        m = a_ > 0.5
        n -= normals
        n *= m
        normals += n
        np.copyto(best_s, s, where=a_ > 0)
        np.maximum(nose_a, a_, out=nose_a)
        if centre is tip_c:
            # nostrils: dark crescents under the tip, seen when the head tilts up (both at once)
            x, y, z = cv.hit(win, s)
            na = _ellipse(np.abs(x), y, tip_r * 0.55, tip_c[1] + tip_r * 0.55, tip_r * 0.35, tip_r * 0.22, cv.px)
            na *= m
            na *= z < tip_c[2] + tip_r * 0.6
            na *= 0.8
            cv.paint(win, na, skin * 0.3)
    cv.paint(win, nose_a * 0.9, skin * 0.97)
    cv.claim(win, nose_a, NOSE)
    # nose wings (alae): darker crescents beside the tip, painted on the cheek surface
    ax, yw = np.abs(hx[win]), hy[win]
    on_skin = (lab == SKIN) * front[win]
    cx, cy = tip_r * 1.05, bottom - tip_r * 0.45
    wing = _ellipse(ax, yw, cx, cy, tip_r * 0.62, tip_r * 0.7, cv.px)
    ring = wing - _ellipse(ax, yw, cx - tip_r * 0.12, cy - tip_r * 0.1, tip_r * 0.5, tip_r * 0.58, cv.px)
    np.maximum(ring, 0.0, out=ring)
    ring *= on_skin
    ring *= 0.45
    cv.paint(win, ring, skin * 0.55)
    wing *= on_skin
    cv.claim(win, wing, NOSE)


def _hair_line(ident: Identity, nz: Nuisance, xn, zn):
    """Normalised y (on the unit cranium) above which hair grows, per surface point."""
    st = ident.hair_style
    b = ident.head_h
    x2 = xn * xn
    peak = x2 * -64.0
    np.exp(peak, out=peak)
    peak *= -ident.widow_peak
    fr = x2 * ident.hair_recede
    fr += (ident.hairline + nz.hair_shift - CRANIUM_CY) / b
    fr += peak
    if ident.fringe > 0:
        f = xn - ident.part * 0.5
        np.abs(f, out=f)
        f *= -1.6
        f += 1.0
        _clip01(f)
        f *= ident.fringe
        fr += f
    side = {BUZZ: 0.02, MEDIUM: 0.55, LONG: 1.0, TIED: 0.05, CURLY: 0.35}.get(st, 0.05)
    back = max(side, 0.6)  # the nape: hair reaches lower behind the ears than above them
    wf = zn - 0.15
    wf *= 2.4
    _clip01(wf)
    rest = zn * -2.5
    _clip01(rest)
    rest *= back - side
    rest += side
    fr -= rest
    fr *= wf
    fr += rest  # fr * wf + rest * (1 - wf)
    return fr


def _hair(cv: _Canvas, ident: Identity, nz: Nuisance, hair, W: Window) -> None:
    if ident.hair_style == BALD:
        return
    vol = ident.hair_volume if ident.hair_style != BUZZ else 0.012
    a, b, c = ident.head_w * (1 + vol), ident.head_h * (1 + vol * 0.8), ident.head_w * 1.15 * (1 + vol)
    centre = (0.0, CRANIUM_CY - vol * 0.3, -0.02)
    cov, s = cv.raycast(W, centre, (a, b, c))
    x, y, z = cv.hit(W, s)
    xn = x
    xn *= 1 / a
    yn = y
    yn -= centre[1]
    yn *= 1 / b
    zn = z
    zn *= 1 / c
    line = _hair_line(ident, nz, xn, zn)
    np.subtract(yn, line, out=line)
    line *= b
    ha = _soft(line, cv.px * 1.5)
    ha *= cov
    # strands: streaks flowing away from the parting, darker deep in the hair
    if ident.hair_style == CURLY:
        arg = np.sin(yn * 31.0)
        arg *= 2.5
        arg += xn * 38.0
        streak = np.sin(arg, out=arg)
        streak *= 0.12
    else:
        arg = xn * 70.0
        arg += yn * 12.0
        arg += ident.part * 10
        streak = np.sin(arg, out=arg)
        streak *= 0.06
    streak += 1.0
    col = hair * streak
    if ident.hair_style == BUZZ:
        ha *= 0.75
    cv.paint(W, ha, col, HAIR, lit=0.9)
    cv.set_normal(W, ha, cv.normals(W, s, cv.normal_coef(centre, (a, b, c))))


def _glasses(cv: _Canvas, ident: Identity, nz: Nuisance, x, y, front) -> None:
    """Frames and lenses; both rims at once in mirrored coordinates |x|."""
    px = cv.px
    frame = _col(0.08, 0.07, 0.07) if nz.glasses_round < 0.6 else _col(0.55, 0.45, 0.3)
    p = 2.0 + 2.5 * (1 - nz.glasses_round)  # superellipse exponent: round (2) .. rectangular (4.5)
    rw, rh = ident.eye_w * 1.75, ident.eye_h * 2.6 + 0.02
    thick = 0.014
    cy = ident.eye_y + 0.005
    z0 = _surface_z(ident, ident.eye_dx, cy)
    win = cv.window([(-ident.head_w, cy - rh - 0.03, z0), (ident.head_w, cy + rh + 0.03, z0),
                     (-ident.head_w, cy + rh, 0.0), (ident.head_w, cy - rh, 0.0)], 3)
    if win is None:
        return
    xw, yw, fw = x[win], y[win], front[win]
    lab = cv.label[win]
    on_face = _UNDER_GLASSES[lab]
    not_hair = lab != HAIR
    ax = np.abs(xw)
    m = min(rw, rh)
    f = ax - ident.eye_dx
    np.abs(f, out=f)
    f *= 1 / rw
    f **= p
    g = yw - cy
    np.abs(g, out=g)
    g *= 1 / rh
    g **= p
    f += g
    f **= 1 / p
    f -= 1.0
    f *= m  # signed distance to the rim, roughly
    lens = _soft(f.copy(), px)
    np.abs(f, out=f)
    f -= thick * 0.5
    rims = _soft(f, px)
    inner = ident.eye_dx - rw
    d = ax - (inner + 0.01)
    e = yw - (cy - rh * 0.45)
    np.abs(e, out=e)
    e -= thick * 0.5
    np.maximum(d, e, out=d)
    bridge = _soft(d, px)
    d = np.subtract(ident.eye_dx + rw, ax, out=ax)
    e = yw - (cy - rh * 0.5)
    np.abs(e, out=e)
    e -= thick * 0.6
    np.maximum(d, e, out=d)
    temple = _soft(d, px)
    total = np.maximum(rims, bridge, out=rims)
    np.maximum(total, temple * not_hair, out=total)
    lens *= fw
    lens *= on_face
    total *= on_face
    total *= np.maximum(fw, temple, out=temple)
    if nz.glasses == 2:
        cv.paint(win, lens * nz.glasses_dark, _col(0.05, 0.06, 0.07), EYE_G)
    else:
        cv.paint(win, lens * 0.12, _col(0.8, 0.9, 0.95))
        cv.claim(win, lens, EYE_G)
    cv.paint(win, total, frame, EYE_G, lit=1.0)


def _hat(cv: _Canvas, ident: Identity, nz: Nuisance, W: Window) -> None:
    vol = ident.hair_volume + 0.05
    a, b, c = ident.head_w * (1 + vol), ident.head_h * (1 + vol), ident.head_w * 1.15 * (1 + vol)
    centre = (0.0, CRANIUM_CY - 0.02, -0.02)
    cov, s = cv.raycast(W, centre, (a, b, c))
    _, y, z = cv.hit(W, s)
    yn = y
    yn -= centre[1]
    yn *= 1 / b
    # the brim rises towards the back: edge = hat line + 0.25 (1 - z / c)
    edge = z * (-0.25 / c)
    edge += (nz.hat_line - CRANIUM_CY) / ident.head_h + 0.25
    np.subtract(yn, edge, out=yn)  # yn - edge
    band = yn + 0.07
    np.abs(band, out=band)
    band *= b
    band -= 0.03
    band = _soft(band, cv.px)
    yn *= b
    ha = _soft(yn, cv.px)
    ha *= cov
    band *= -0.3
    band += 1.0
    colour = _col(nz.hat_r, nz.hat_g, nz.hat_b) * band
    cv.paint(W, ha, colour, HAT, lit=0.9)
    cv.set_normal(W, ha, cv.normals(W, s, cv.normal_coef(centre, (a, b, c))))


# --------------------------------------------------------------------------- light and camera


def _finish(cv: _Canvas, nz: Nuisance) -> np.ndarray:
    """Light, expose, add sensor noise, quantise, blur: the uint8 (size, size, 3) image."""
    size = cv.size
    az, el = math.radians(nz.light_azimuth), math.radians(nz.light_elevation)
    L = (math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el))
    n = cv.normal
    dot = n[0] * L[0]
    dot += n[1] * L[1]
    dot += n[2] * L[2]
    nn = n[0] * n[0]
    nn += n[1] * n[1]
    nn += n[2] * n[2]
    nn += 1e-12
    np.sqrt(nn, out=nn)
    dot /= nn  # the stored normals are unnormalised
    np.maximum(dot, 0.0, out=dot)
    amb = nz.light_ambient
    # shade = 1 + lit (amb 1.1 + 1.2 (1 - amb) lam - 1)
    dot *= 1.2 * (1 - amb)
    dot += amb * 1.1 - 1.0
    dot *= cv.lit
    dot += 1.0
    tint = _col(255 * (1 + nz.light_tint), 255, 255 * (1 - nz.light_tint)) * nz.exposure
    img = cv.albedo
    img *= tint
    img *= dot
    if nz.noise > 0:
        bank = _bank()
        ou, ov = int(nz.noise_u * (512 - size)), int(nz.noise_v * (512 - size))
        img += bank[:, ov:ov + size, ou:ou + size] * (nz.noise * 0.7 * 255)
    img += 0.5
    _uclip(img, 0.0, 255.0, out=img)
    planes = img.astype(np.uint8)  # truncates, as the +0.5 above intends
    out = np.empty((size, size, 3), np.uint8)
    for k in range(3):  # channels last, one plane at a time: faster than one strided copy
        out[:, :, k] = planes[k]
    if nz.blur > 0:
        # Pillow's Gaussian (extended box blur) keeps the variance right down to sigma 0.3,
        # where a sampled Gaussian kernel hardly blurs at all: the nuisance as calibrated
        from PIL import Image, ImageFilter

        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(nz.blur * size / 112)))
    return out

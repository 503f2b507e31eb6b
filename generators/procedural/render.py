"""The renderer: one identity + one nuisance -> an RGB face and its segmentation map.

The head is a union of ellipsoids (cranium, jaw, nose bridge, nose tip) ray-cast exactly
under yaw and pitch (orthographic camera), so turning the head foreshortens the far side,
hides the far eye behind the nose and shows the ear: a 2.5-D warp rather than an image
rotation. Roll, crop jitter and zoom are a similarity on the image plane. Eyes, brows,
lips, moles, beard and glasses are painted in the head's own frontal coordinates (x, y) of
each ray's hit point, so they move with the surface. Hair and hats are shells slightly
larger than the cranium, cut by a hairline. Everything is vectorised numpy in float32;
small parts are evaluated only inside their projected bounding box.

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


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=F32) + F32(0.5)) / F32(size / 2) - F32(1)
    return np.broadcast_to(c[None, :], (size, size)).copy(), np.broadcast_to(c[:, None], (size, size)).copy()


@lru_cache(maxsize=1)
def _bank() -> np.ndarray:
    """A fixed, smooth-ish noise texture (same on every machine: seeded, numpy only)."""
    r = np.random.Generator(np.random.PCG64(20240601))
    n = r.standard_normal((3, 512, 512)).astype(F32)
    # mild low-pass so skin noise reads as texture rather than salt and pepper
    n = (n + np.roll(n, 1, 1) + np.roll(n, 1, 2) + np.roll(n, (1, 1), (1, 2))) * F32(0.5)
    return n


try:  # the clip ufunc itself: np.clip's Python wrapper costs more than the work on small windows
    _uclip = np._core.umath.clip
except AttributeError:  # pragma: no cover - older numpy
    _uclip = np.clip


def _clip01(a):
    return _uclip(a, F32(0), F32(1), out=a)


class _Canvas:
    """Albedo, normals and labels being composited, plus the camera of one image."""

    def __init__(self, size: int, ident: Identity, nz: Nuisance) -> None:
        self.size = size
        uu, vv = _grid(size)
        yaw, pitch, roll = (math.radians(v) for v in (nz.yaw, nz.pitch, nz.roll))
        self.zoom = ZOOM * nz.scale
        cr, sr = math.cos(roll), math.sin(roll)
        du = uu - F32(nz.shift_x)
        dv = vv - F32(nz.shift_y + HEAD_V)
        k = F32(1.0 / self.zoom)
        # image -> de-rolled view coordinates (head centre at the origin)
        self.pu = (F32(cr) * du + F32(sr) * dv) * k
        self.pv = (F32(-sr) * du + F32(cr) * dv) * k
        self.roll = (cr, sr)
        self.shift = (nz.shift_x, nz.shift_y + HEAD_V)
        cy, sy = math.cos(yaw), math.sin(yaw)
        cp, sp = math.cos(pitch), math.sin(pitch)
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rp = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        self.R = rp @ ry  # head -> view
        self.M = self.R.T  # view -> head
        self.px = 2.0 / (size * self.zoom)  # one pixel in head units
        self.albedo = np.empty((3, size, size), F32)  # channels first: cheap broadcasting of alphas
        self.normal = np.zeros((3, size, size), F32)
        self.normal[2] = 1.0
        self.label = np.zeros((size, size), np.uint8)
        self.lit = np.zeros((size, size), F32)  # 1 where lighting applies fully

    # ---------------------------------------------------------------- geometry helpers

    def window(self, pts: list[tuple[float, float, float]], margin: float = 2.0):
        """The pixel box (row slice, col slice) covering the projections of head points."""
        v = np.asarray(pts, float) @ self.R.T
        cr, sr = self.roll
        half = self.size / 2
        cols = ((cr * v[:, 0] - sr * v[:, 1]) * self.zoom + self.shift[0] + 1) * half - 0.5
        rows = ((sr * v[:, 0] + cr * v[:, 1]) * self.zoom + self.shift[1] + 1) * half - 0.5
        r0 = max(int(math.floor(rows.min() - margin)), 0)
        r1 = min(int(math.ceil(rows.max() + margin)) + 1, self.size)
        c0 = max(int(math.floor(cols.min() - margin)), 0)
        c1 = min(int(math.ceil(cols.max() + margin)) + 1, self.size)
        if r1 <= r0 or c1 <= c0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def raycast(self, win, centre, axes):
        """Front hit of the view rays in `win` with an ellipsoid: (coverage, s, x, y, z) in head space."""
        M = self.M
        a2 = [1.0 / (ax * ax) for ax in axes]
        pu, pv = (self.pu, self.pv) if win is None else (self.pu[win], self.pv[win])
        d = M[:, 2]
        A = sum(d[i] * d[i] * a2[i] for i in range(3))
        q = [F32(M[i, 0]) * pu + F32(M[i, 1]) * pv - F32(centre[i]) for i in range(3)]
        B = q[0] * F32(2 * d[0] * a2[0]) + q[1] * F32(2 * d[1] * a2[1]) + q[2] * F32(2 * d[2] * a2[2])
        C = q[0] * q[0] * F32(a2[0]) + q[1] * q[1] * F32(a2[1]) + q[2] * q[2] * F32(a2[2]) - F32(1)
        disc = B * B - F32(4 * A) * C
        r3 = (axes[0] * axes[1] * axes[2])
        cov = disc * F32(r3 / 8.0 / self.px) + F32(0.5)  # ~ signed distance to the outline, in pixels
        _clip01(cov)
        s = (np.sqrt(np.maximum(disc, 0, out=disc)) - B) * F32(0.5 / A)
        x = q[0] + F32(d[0]) * s + F32(centre[0])
        y = q[1] + F32(d[1]) * s + F32(centre[1])
        z = q[2] + F32(d[2]) * s + F32(centre[2])
        return cov, s, x, y, z

    def view_normal(self, x, y, z, centre, axes):
        """Unit surface normal of the ellipsoid at head points, rotated into the view."""
        g = [(x - F32(centre[0])) * F32(1 / axes[0] ** 2), (y - F32(centre[1])) * F32(1 / axes[1] ** 2),
             (z - F32(centre[2])) * F32(1 / axes[2] ** 2)]
        return self.rotate_normal(g)

    def rotate_normal(self, g):
        """A head-space gradient (3 arrays) -> unit normal in the view."""
        R = self.R
        n = [g[0] * F32(R[i, 0]) + g[1] * F32(R[i, 1]) + g[2] * F32(R[i, 2]) for i in range(3)]
        inv = F32(1) / np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2] + F32(1e-12))
        return [c * inv for c in n]

    def paint(self, win, alpha, rgb, label: int | None, lit: float | None = None) -> None:
        """Alpha-composite a colour (3-vector or (3, h, w)) and claim the label where alpha > 1/2."""
        if win is None:
            win = (slice(None), slice(None))
        alb = self.albedo[(slice(None),) + tuple(win)]
        rgb = np.asarray(rgb, F32)
        t = (rgb[:, None, None] if rgb.ndim == 1 else rgb) - alb
        t *= alpha
        alb += t
        if label is not None:
            self.claim(win, alpha, label)
        if lit is not None:
            lt = self.lit[win]
            lt += alpha * (F32(lit) - lt)


    def claim(self, win, alpha, label: int) -> None:
        """label := `label` where alpha > 1/2 (uint8 wrap-around arithmetic: no masked store)."""
        lab = self.label[win]
        m = (alpha > 0.5).view(np.uint8)
        lab += m * (np.uint8(label) - lab)

    def set_normal(self, win, alpha, n) -> None:
        """Normals := n where alpha > 1/2."""
        m = (alpha > 0.5).astype(F32)
        for i in range(3):
            dst = self.normal[i] if win is None else self.normal[i][win]
            dst += m * (n[i] - dst)


def _soft(d, px: float):
    """Coverage from a signed distance (negative inside), one pixel of anti-aliasing."""
    a = F32(0.5) - d * F32(1.0 / px)
    return _clip01(a)


def _ellipse(x, y, cx, cy, rx, ry, px):
    f = ((x - F32(cx)) * F32(1 / rx)) ** 2 + ((y - F32(cy)) * F32(1 / ry)) ** 2
    return _soft((f - F32(1)) * F32(0.5 * min(rx, ry)), px)


def _surface_z(ident: Identity, x: float, y: float) -> float:
    """Depth of the cranium's front surface at head point (x, y): for bounding boxes."""
    a, b, c = ident.head_w, ident.head_h, ident.head_w * 1.15
    t = 1 - (x / a) ** 2 - ((y - CRANIUM_CY) / b) ** 2
    return c * math.sqrt(max(t, 0.0))


def _rgb(*v: float) -> np.ndarray:
    return np.asarray(v, F32)


# --------------------------------------------------------------------------- the scene


def render(ident: Identity, nz: Nuisance, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (size, size, 3) RGB, uint8 (size, size) class indices)."""
    cv = _Canvas(size, ident, nz)
    px = cv.px
    age = ident.base_age + nz.age_delta
    grey = float(np.clip((age - 42) / 35, 0, 0.85))
    hair_rgb = _rgb(ident.hair_r, ident.hair_g, ident.hair_b)
    hair_rgb = hair_rgb * F32(1 - grey) + _rgb(0.72, 0.72, 0.70) * F32(grey)
    skin = _rgb(ident.skin_r, ident.skin_g, ident.skin_b)
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
    hx, hy, hz = _head(cv, ident, skin, W)
    front = _clip01((hz - F32(0.05)) * F32(8.0))  # face features live on the front half only
    _face_details(cv, ident, nz, hx, hy, hz, front, skin, age)
    _eyes_brows(cv, ident, nz, hx, hy, front, hair_rgb)
    _mouth(cv, ident, nz, hx, hy, front, skin)
    _nose(cv, ident, nz, skin, hx, hy, front)
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
    img = _shade(cv, nz)
    return _degrade(img, nz, size), cv.label


# --------------------------------------------------------------------------- layers


def _background(cv: _Canvas, nz: Nuisance) -> None:
    uu, vv = _grid(cv.size)
    c1 = _rgb(nz.bg_r, nz.bg_g, nz.bg_b)
    c2 = _rgb(nz.bg2_r, nz.bg2_g, nz.bg2_b)
    if nz.background == 0:
        cv.albedo[:] = c1[:, None, None]
    elif nz.background == 1:
        t = (vv * F32(0.5) + F32(0.5))[None]
        cv.albedo[:] = c1[:, None, None] + (c2 - c1)[:, None, None] * t
    else:
        t = np.sin(uu * F32(3.1) + F32(nz.noise_u * 6)) * np.sin(vv * F32(2.3) + F32(nz.noise_v * 6))
        cv.albedo[:] = c1[:, None, None] + (c2 - c1)[:, None, None] * (t * F32(0.5) + F32(0.5))[None]
    cv.lit[:] = 0.25


def _cloth_neck(cv: _Canvas, ident: Identity, nz: Nuisance, skin: np.ndarray) -> None:
    yaw_s = math.sin(math.radians(nz.yaw))
    un = -0.12 * yaw_s  # the neck's axis sits behind the head centre
    pu, pv, px = cv.pu, cv.pv, cv.px
    rn = ident.jaw_w * 0.78
    du = pu - F32(un)
    # neck: a vertical cylinder below the jaw
    neck = _soft(np.abs(du) - F32(rn), px) * _soft(F32(0.2) - pv, px)
    nx = np.clip(du * F32(1 / rn), -1, 1)
    win = np.s_[:, :]
    cv.paint(win, neck, skin * F32(0.93), NECK, lit=1.0)
    cv.set_normal(None, neck, (nx, F32(0.25), np.sqrt(np.maximum(F32(1) - nx * nx, 0))))
    # cloth: shoulders sloping away from a neckline
    top = (F32(1.02 + 0.12 * (ident.head_h - 1)) + F32(0.25) * np.exp(-(du * F32(2.6)) ** 2)
           - F32(0.12) * np.minimum(np.abs(du), 1.2))
    cloth = _soft(top - pv, px)
    cv.paint(win, cloth, _rgb(nz.cloth_r, nz.cloth_g, nz.cloth_b), CLOTH, lit=0.7)


def _long_hair(cv: _Canvas, ident: Identity, hair: np.ndarray) -> None:
    w = ident.head_w * (1.0 + ident.hair_volume)
    win = np.s_[:, :]
    d = np.abs(cv.pu) - F32(w) * (F32(1.02) - F32(0.08) * cv.pv)
    a = _soft(d, cv.px) * _soft(cv.pv - F32(1.35), cv.px) * _soft(F32(-0.2) - cv.pv, cv.px)
    cv.paint(win, a, hair * F32(0.8), HAIR, lit=0.6)


def _bun(cv: _Canvas, ident: Identity, hair: np.ndarray) -> None:
    c = np.array([0.0, CRANIUM_CY - 0.55 * ident.head_h, -0.55 * ident.head_w])
    r = 0.25
    win = cv.window([tuple(c + o) for o in ([r, r, 0], [-r, -r, 0], [r, -r, 0], [-r, r, 0])], 3)
    if win is None:
        return
    cov, s, x, y, z = cv.raycast(win, c, (r, r * 0.9, r))
    cv.paint(win, cov, hair, HAIR, lit=0.8)


def _ears(cv: _Canvas, ident: Identity, nz: Nuisance) -> list[dict]:
    yaw_s = math.sin(math.radians(nz.yaw))
    out = []
    for side, label in ((1.0, L_EAR), (-1.0, R_EAR)):
        p = np.array([side * (ident.head_w + 0.015), ident.ear_y, -0.06])
        v = cv.R @ p
        toward = v[2] > 0.08 * ident.head_w  # the ear has swung toward the camera
        h = ident.ear_size / 2
        w = ident.ear_size * (0.16 + 0.24 * abs(yaw_s)) if toward else ident.ear_size * 0.16 * max(1 - abs(yaw_s) * 1.6, 0.15)
        # centre pushed outward so a frontal ear sticks out of the silhouette
        u0 = v[0] + (0 if toward else side * w * 0.6 * (1 - abs(yaw_s)))
        out.append({"u": u0, "v": v[1], "w": max(w, 0.035), "h": h, "label": label, "near": toward})
    return out


def _paint_ear(cv: _Canvas, ear: dict, skin: np.ndarray) -> None:
    cr, sr = cv.roll
    u, v = ear["u"], ear["v"]
    # bounding box in image pixels
    ci = ((cr * u - sr * v) * cv.zoom + cv.shift[0] + 1) * cv.size / 2
    ri = ((sr * u + cr * v) * cv.zoom + cv.shift[1] + 1) * cv.size / 2
    rad = (max(ear["w"], ear["h"]) * cv.zoom * cv.size / 2) + 3
    r0, r1 = max(int(ri - rad), 0), min(int(ri + rad) + 1, cv.size)
    c0, c1 = max(int(ci - rad), 0), min(int(ci + rad) + 1, cv.size)
    if r1 <= r0 or c1 <= c0:
        return
    win = np.s_[r0:r1, c0:c1]
    pu, pv = cv.pu[win], cv.pv[win]
    a = _ellipse(pu, pv, u, v + ear["h"] * 0.05, ear["w"], ear["h"], cv.px)
    cv.paint(win, a, skin * F32(0.9), ear["label"], lit=0.9)
    inner = _ellipse(pu, pv, u, v, ear["w"] * 0.55, ear["h"] * 0.6, cv.px) * F32(0.5)
    cv.paint(win, inner * a, skin * F32(0.6), None)


def _earring(cv: _Canvas, ear: dict) -> None:
    u, v = ear["u"], ear["v"] + ear["h"] * 1.05
    cr, sr = cv.roll
    ci = ((cr * u - sr * v) * cv.zoom + cv.shift[0] + 1) * cv.size / 2
    ri = ((sr * u + cr * v) * cv.zoom + cv.shift[1] + 1) * cv.size / 2
    rad = 0.05 * cv.zoom * cv.size / 2 + 2
    r0, r1 = max(int(ri - rad), 0), min(int(ri + rad) + 1, cv.size)
    c0, c1 = max(int(ci - rad), 0), min(int(ci + rad) + 1, cv.size)
    if r1 <= r0 or c1 <= c0:
        return
    win = np.s_[r0:r1, c0:c1]
    a = _ellipse(cv.pu[win], cv.pv[win], u, v, 0.028, 0.028, cv.px)
    cv.paint(win, a, _rgb(0.85, 0.75, 0.35), EARRING, lit=1.0)


def _head_window(cv: _Canvas, ident: Identity):
    """Pixels the head, its hair and any hat can reach: the full-size ray casts stay inside."""
    v = max(ident.hair_volume, 0.02) + 0.07
    a, b, c = ident.head_w * (1 + v), ident.head_h * (1 + v), ident.head_w * 1.15 * (1 + v)
    pts = [(sx * a, CRANIUM_CY + sy * b, sz * c) for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    pts += [(sx * ident.jaw_w, ident.chin_y + 0.02, sz * ident.jaw_w * 1.2) for sx in (-1, 1) for sz in (-1, 1)]
    return cv.window(pts, 2)


def _head(cv: _Canvas, ident: Identity, skin: np.ndarray, W):
    a, b, c = ident.head_w, ident.head_h, ident.head_w * 1.15
    cran_c, cran_ax = (0.0, CRANIUM_CY, 0.0), (a, b, c)
    jb = ident.jaw_h
    jaw_c = (0.0, ident.chin_y - jb, 0.02)
    jaw_ax = (ident.jaw_w, jb, ident.jaw_w * 1.2)
    cov1, s1, x1, y1, z1 = cv.raycast(W, cran_c, cran_ax)
    cov2, s2, x2, y2, z2 = cv.raycast(W, jaw_c, jaw_ax)
    jaw_front = (s2 > s1) & (cov2 > 0.5) | (cov1 <= 0.5)
    x = np.where(jaw_front, x2, x1)
    y = np.where(jaw_front, y2, y1)
    z = np.where(jaw_front, z2, z1)
    cov = np.maximum(cov1, cov2)
    # blend the two surfaces' gradients near the seam so the jaw line does not read as a crease
    w = np.where(cov1 > 0.5, _clip01((s2 - s1) * F32(12) + F32(0.5)), F32(1))
    g = [(h2 - F32(c2)) * (w * F32(1 / a2 ** 2)) + (h1 - F32(c1)) * ((F32(1) - w) * F32(1 / a1 ** 2))
         for h1, h2, c1, c2, a1, a2 in zip((x1, y1, z1), (x2, y2, z2), cran_c, jaw_c, cran_ax, jaw_ax)]
    cv.set_normal(W, cov, cv.rotate_normal(g))
    S = np.full((cv.size, cv.size), -9.0, F32)
    S[W] = np.where(jaw_front, s2, s1)
    cv.head_depth = S
    # skin albedo with the identity's fixed texture (looked up in head coordinates)
    bank = _bank()
    iu = ((x * F32(60) + F32(ident.noise_u * 300)).astype(np.int32)) & 511
    iv = ((y * F32(60) + F32(ident.noise_v * 300)).astype(np.int32)) & 511
    tex = bank[0][iv, iu] * F32(ident.skin_noise * 0.3)
    col = skin[:, None, None] * (F32(1) + tex)[None]
    # blush on the cheeks, darker towards the outline (a cheap ambient occlusion)
    cheek = F32(1) - ((np.abs(x) - F32(0.33)) * F32(5)) ** 2 - ((y - F32(0.28)) * F32(4.5)) ** 2
    col = col + (_clip01(cheek) * F32(ident.blush))[None] * _rgb(0.5, -0.15, -0.1)[:, None, None]
    cv.paint(W, cov, col, SKIN, lit=1.0)
    # full-size head coordinates; pixels outside the window lie far from every feature
    X = np.zeros((cv.size, cv.size), F32)
    Y = np.full((cv.size, cv.size), 9.0, F32)
    Z = np.full((cv.size, cv.size), -1.0, F32)
    X[W], Y[W], Z[W] = x, y, z
    return X, Y, Z


def _face_details(cv, ident: Identity, nz: Nuisance, x, y, z, front, skin, age: float) -> None:
    px = cv.px
    # moles
    for mx, my, mr in zip(ident.mole_x, ident.mole_y, ident.mole_r):
        win = cv.window([(mx - mr, my - mr, _surface_z(ident, mx, my)), (mx + mr, my + mr, _surface_z(ident, mx, my))], 2)
        if win is None:
            continue
        a = _ellipse(x[win], y[win], mx, my, mr, mr, px) * front[win] * (cv.label[win] == SKIN)
        cv.paint(win, a * F32(0.85), skin * F32(0.45), None)
    # age: forehead lines and nasolabial folds
    wr = float(np.clip((age - 32) / 40, 0, 1))
    if wr > 0:
        top = ident.hairline + 0.08
        win = cv.window([(-0.4, top, _surface_z(ident, 0.4, top)), (0.4, ident.eye_y - 0.12, _surface_z(ident, 0.0, 0.0)),
                         (0.4, top, _surface_z(ident, 0.4, top))], 2)
        if win is not None:
            xw, yw = x[win], y[win]
            band = _clip01(F32(1) - np.abs(xw) * F32(2.2)) * (yw > F32(top)) * (yw < F32(ident.eye_y - 0.13))
            lines = np.maximum(np.sin(yw * F32(90)), 0) ** 4
            cv.paint(win, band * lines * front[win] * F32(0.35 * wr), skin * F32(0.6), None)
        for side in (1.0, -1.0):
            x0 = side * (ident.nose_w * 0.75)
            y0 = ident.eye_y + ident.nose_len
            x1 = side * (ident.mouth_w * 1.05)
            y1 = ident.mouth_y + 0.03
            win = cv.window([(x0, y0, _surface_z(ident, x0, y0)), (x1 + side * 0.04, y1, _surface_z(ident, x1, y1))], 2)
            if win is None:
                continue
            xw, yw = x[win], y[win]
            t = np.clip((yw - F32(y0)) * F32(1 / (y1 - y0)), 0, 1)
            xl = F32(x0) + (F32(x1 - x0) + F32(side * 0.03) * (F32(1) - t)) * t
            d = np.abs(xw - xl) - F32(0.008)
            a = _soft(d, px) * (yw > F32(y0)) * (yw < F32(y1)) * front[win] * F32(0.45 * wr)
            cv.paint(win, a, skin * F32(0.62), None)
    # facial hair: shaded region on the lower face, labelled skin as CelebAMask-HQ does
    if ident.beard:
        hair = _rgb(ident.hair_r, ident.hair_g, ident.hair_b) * F32(0.9)
        win = cv.window([(-0.7, ident.mouth_y - 0.15, 0.1), (0.7, ident.chin_y + 0.05, 0.1)], 3)
        if win is not None:
            xw, yw = x[win], y[win]
            my = ident.mouth_y
            mouth_zone = ((xw * F32(1 / (ident.mouth_w * 1.15))) ** 2 + ((yw - F32(my)) * F32(1 / 0.085)) ** 2) < 1
            k = ident.beard
            if k == 1:  # stubble
                a = _soft(F32(my - 0.08) - yw, px * 4) * F32(0.45)
            elif k == 2:  # moustache
                a = (_soft(np.abs(yw - F32(my - ident.lip_up - 0.035)) - F32(0.028), px)
                     * _soft(np.abs(xw) - F32(ident.mouth_w * 1.1), px))
            elif k == 3:  # goatee
                a = _soft(np.abs(xw) - F32(ident.mouth_w * 0.8), px) * _soft(F32(my - 0.07) - yw, px)
                a = a * (~mouth_zone | (yw < F32(my - ident.lip_up - 0.01)))
            else:  # full beard
                a = _soft(F32(my - 0.1) - yw - np.abs(xw) * F32(0.15), px * 2)
                a = a * (~mouth_zone | (yw < F32(my - ident.lip_up - 0.01)))
            a = a * front[win] * F32(ident.beard_density) * (cv.label[win] == SKIN)
            cv.paint(win, a.astype(F32), hair, None)


def _eyes_brows(cv, ident: Identity, nz: Nuisance, x, y, front, hair) -> None:
    px = cv.px
    iris = _rgb(ident.iris_r, ident.iris_g, ident.iris_b)
    openness = 1.0 - nz.blink
    brow_col = hair * F32(ident.brow_dark) + _rgb(0.05, 0.04, 0.03) * F32(1 - ident.brow_dark)
    for side, eye_label, brow_label in ((1.0, L_EYE, L_BROW), (-1.0, R_EYE, R_BROW)):
        cx, cy = side * ident.eye_dx, ident.eye_y
        ew, eh = ident.eye_w, ident.eye_h
        by = cy - eh - ident.brow_gap - 0.03 * nz.brow_raise
        top = by - ident.brow_arch - ident.brow_thick - 0.03
        z0 = _surface_z(ident, cx, cy)
        win = cv.window([(cx - ident.brow_len * 1.1, top, z0), (cx + ident.brow_len * 1.1, cy + eh * 2.2, z0),
                         (cx - ident.brow_len * 1.1, cy + eh * 2.2, z0 * 0.5), (cx + ident.brow_len * 1.1, top, z0 * 0.5)], 3)
        if win is None:
            continue
        xw, yw, fw = x[win], y[win], front[win]
        on_skin = (cv.label[win] == SKIN) * fw
        # eye socket shadow and lid crease
        sock = _ellipse(xw, yw, cx, cy - eh * 0.4, ew * 1.5, eh * 2.4, px * 6) * F32(0.22)
        cv.paint(win, sock * on_skin, _rgb(0.25, 0.15, 0.12), None)
        # local eye coordinates, tilted (outer corner up for positive tilt)
        tx = (xw - F32(cx)) * F32(side / ew)
        ty = (yw - F32(cy)) * F32(1 / eh) + tx * F32(ident.eye_tilt * 1.2)
        w2 = F32(1) - tx * tx
        upper = -w2 * F32(1.0 * openness) - F32(0.05)
        lower = w2 * F32(0.75 * max(openness, 0.15) - 0.05 * (1 - openness)) + F32(0.05)
        dist = np.maximum(upper - ty, ty - lower) * F32(eh)
        dist = np.maximum(dist, (np.abs(tx) - F32(1)) * F32(ew))
        eye = _soft(dist, px) * on_skin
        if openness > 0.05:
            cv.paint(win, eye, _rgb(0.93, 0.91, 0.88), eye_label)
            gx = cx + side * nz.gaze * ew * 0.35
            ir = eh * 1.05
            ia = _ellipse(xw, yw, gx, cy + eh * 0.05, ir, ir, px) * eye
            cv.paint(win, ia, iris, None)
            pa = _ellipse(xw, yw, gx, cy + eh * 0.05, ir * 0.45, ir * 0.45, px) * eye
            cv.paint(win, pa, _rgb(0.03, 0.03, 0.03), None)
            ha = _ellipse(xw, yw, gx + ir * 0.3, cy - eh * 0.25, ir * 0.2, ir * 0.2, px) * eye
            cv.paint(win, ha * F32(0.9), _rgb(1, 1, 1), None)
        # lash line along the upper lid
        lash = _soft(np.maximum(np.abs(ty - upper + F32(0.12)) * F32(eh) - F32(0.012), (np.abs(tx) - F32(1.08)) * F32(ew)), px)
        cv.paint(win, lash * on_skin * F32(0.85), _rgb(0.06, 0.04, 0.04), eye_label if openness > 0.05 else None)
        # brow: an arched band tapering towards the outer end
        bx = (xw - F32(cx)) * F32(side / ident.brow_len)
        yc = F32(by) - F32(ident.brow_arch) * (F32(1) - bx * bx) - bx * F32(ident.brow_tilt * ident.brow_len)
        thick = F32(ident.brow_thick) * (F32(1) - F32(0.45) * np.clip(bx, 0, 1))
        d = np.maximum(np.abs(yw - yc) - thick * F32(0.5), (np.abs(bx) - F32(1)) * F32(ident.brow_len))
        brow = _soft(d, px) * (cv.label[win] == SKIN) * fw
        cv.paint(win, brow * F32(0.95), brow_col, brow_label)


def _mouth(cv, ident: Identity, nz: Nuisance, x, y, front, skin) -> None:
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
    t = xw * F32(1 / mw)
    w2 = np.maximum(F32(1) - t * t, 0)
    yc = F32(my) - F32(0.045 * nz.smile) * t * t + F32(0.012 * nz.smile)
    sw = np.sqrt(w2)
    bow = F32(1) - F32(0.35) * np.exp(-(t * F32(6)) ** 2)  # the cupid's bow dip
    up_top = yc - F32(gap * 0.4) - F32(ident.lip_up) * sw * bow - F32(0.004)
    lo_bot = yc + F32(gap * 0.6) + F32(ident.lip_lo) * sw + F32(0.004)
    side_d = (np.abs(t) - F32(1)) * F32(mw)
    lips = _soft(np.maximum(np.maximum(up_top - yw, yw - lo_bot), side_d), px) * ok
    lip = _rgb(ident.lip_r, ident.lip_g, ident.lip_b)
    upper = lips * (yw < yc)
    lower = lips * (yw >= yc)
    cv.paint(win, upper.astype(F32), lip * F32(0.92), U_LIP)
    cv.paint(win, lower.astype(F32), lip, L_LIP)
    if gap > 0:
        inner = _soft(np.maximum(np.abs(yw - (yc + F32(gap * 0.1))) - F32(gap * 0.5) * sw, side_d + F32(0.015)), px) * ok
        cv.paint(win, inner, _rgb(0.25, 0.06, 0.07), MOUTH)
        teeth = inner * (yw < yc - F32(gap * 0.1)) * _soft(np.abs(t) - F32(0.7), px)
        cv.paint(win, teeth.astype(F32), _rgb(0.9, 0.88, 0.82), None)
    else:
        line = _soft(np.maximum(np.abs(yw - yc) - F32(0.004), side_d), px) * ok
        cv.paint(win, line * F32(0.8), lip * F32(0.45), None)
    # dimples of a smile
    if nz.smile > 0.2:
        for s in (1.0, -1.0):
            a = _ellipse(xw, yw, s * (mw + 0.025), my - 0.01, 0.008, 0.03, px) * ok * F32(0.4 * nz.smile)
            cv.paint(win, a, skin * F32(0.7), None)


def _nose(cv, ident: Identity, nz: Nuisance, skin, hx, hy, front) -> None:
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
    covh = (lab == SKIN) | (lab == L_EYE) | (lab == R_EYE) | (lab == U_LIP) | (lab == L_LIP) | (lab == L_BROW) | (lab == R_BROW)
    best_s = np.where(covh, cv.head_depth[win], F32(-9))  # the face under the nose
    nose_a = np.zeros(best_s.shape, F32)
    normals = [cv.normal[i][win].copy() for i in range(3)]
    for centre, axes in ((bridge_c, bridge_ax), (tip_c, tip_ax)):
        cov, s, x, y, z = cv.raycast(win, centre, axes)
        wins = (s > best_s) & (cov > 0.02)
        a_ = np.where(wins, cov, F32(0))
        n = cv.view_normal(x, y, z, centre, axes)
        m = (a_ > 0.5).astype(F32)
        for i in range(3):
            normals[i] += m * (n[i] - normals[i])
        best_s = np.where(wins, s, best_s)
        nose_a = np.maximum(nose_a, a_)
        if centre is tip_c:
            # nostrils: dark crescents under the tip, seen when the head tilts up
            for side in (1.0, -1.0):
                na = _ellipse(x, y, side * tip_r * 0.55, tip_c[1] + tip_r * 0.55, tip_r * 0.35, tip_r * 0.22, cv.px)
                na = na * m * (z < F32(tip_c[2] + tip_r * 0.6))
                cv.paint(win, na * F32(0.8), skin * F32(0.3), None)
    skin_n = skin * F32(0.97)
    cv.paint(win, nose_a * F32(0.9), skin_n, None)
    cv.claim(win, nose_a, NOSE)
    for i in range(3):
        cv.normal[i][win] = normals[i]
    # nose wings (alae): darker crescents beside the tip, painted on the cheek surface
    xw, yw = hx[win], hy[win]
    on_skin = (lab == SKIN) * front[win]
    for side in (1.0, -1.0):
        cx, cy = side * tip_r * 1.05, bottom - tip_r * 0.45
        ring = _ellipse(xw, yw, cx, cy, tip_r * 0.62, tip_r * 0.7, cv.px) - _ellipse(
            xw, yw, cx - side * tip_r * 0.12, cy - tip_r * 0.1, tip_r * 0.5, tip_r * 0.58, cv.px)
        cv.paint(win, np.maximum(ring, 0) * on_skin * F32(0.45), skin * F32(0.55), None)
        wing = _ellipse(xw, yw, cx, cy, tip_r * 0.62, tip_r * 0.7, cv.px) * on_skin
        cv.claim(win, wing, NOSE)


def _hair_line(ident: Identity, nz: Nuisance, xn, yn, zn):
    """Normalised y (on the unit cranium) above which hair grows, per surface point."""
    st = ident.hair_style
    b = ident.head_h
    front = (ident.hairline + nz.hair_shift - CRANIUM_CY) / b
    fr = F32(front) + F32(ident.hair_recede) * xn * xn - F32(ident.widow_peak) * np.exp(-(xn * F32(8)) ** 2)
    if ident.fringe > 0:
        fr = fr + F32(ident.fringe) * _clip01(F32(1) - np.abs(xn - F32(ident.part * 0.5)) * F32(1.6))
    side = {BUZZ: 0.02, MEDIUM: 0.55, LONG: 1.0, TIED: 0.05, CURLY: 0.35}.get(st, 0.05)
    back = max(side, 0.6)  # the nape: hair reaches lower behind the ears than above them
    wf = _clip01((zn - F32(0.15)) * F32(2.4))
    wb = _clip01(-zn * F32(2.5))
    rest = F32(side) + F32(back - side) * wb
    return fr * wf + rest * (F32(1) - wf)


def _hair(cv, ident: Identity, nz: Nuisance, hair, W) -> None:
    if ident.hair_style == BALD:
        return
    vol = ident.hair_volume if ident.hair_style != BUZZ else 0.012
    a, b, c = ident.head_w * (1 + vol), ident.head_h * (1 + vol * 0.8), ident.head_w * 1.15 * (1 + vol)
    centre = (0.0, CRANIUM_CY - vol * 0.3, -0.02)
    cov, s, x, y, z = cv.raycast(W, centre, (a, b, c))
    xn, yn, zn = x * F32(1 / a), (y - F32(centre[1])) * F32(1 / b), z * F32(1 / c)
    line = _hair_line(ident, nz, xn, yn, zn)
    ha = cov * _soft((yn - line) * F32(b), cv.px * 1.5)
    # strands: streaks flowing away from the parting, darker deep in the hair
    streak = np.sin(xn * F32(70) + yn * F32(12) + F32(ident.part * 10)) * F32(0.06)
    if ident.hair_style == CURLY:
        streak = np.sin(xn * F32(38) + np.sin(yn * F32(31)) * F32(2.5)) * F32(0.12)
    col = hair[:, None, None] * (F32(1) + streak)[None]
    if ident.hair_style == BUZZ:
        ha = ha * F32(0.75)
    cv.paint(W, ha, col, HAIR, lit=0.9)
    cv.set_normal(W, ha, cv.view_normal(x, y, z, centre, (a, b, c)))


def _glasses(cv, ident: Identity, nz: Nuisance, x, y, front) -> None:
    px = cv.px
    frame = _rgb(0.08, 0.07, 0.07) if nz.glasses_round < 0.6 else _rgb(0.55, 0.45, 0.3)
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
    on_face = ((lab != BG) & (lab != HAIR) & (lab != NECK) & (lab != CLOTH)).astype(F32)
    total = np.zeros(xw.shape, F32)
    lens_all = np.zeros(xw.shape, F32)
    for side in (1.0, -1.0):
        cx = side * ident.eye_dx
        f = (np.abs(xw - F32(cx)) * F32(1 / rw)) ** p + (np.abs(yw - F32(cy)) * F32(1 / rh)) ** p
        r = f ** F32(1 / p)
        lens = _soft((r - F32(1)) * F32(min(rw, rh)), px)
        ring = _soft(np.abs(r - F32(1)) * F32(min(rw, rh)) - F32(thick * 0.5), px)
        total = np.maximum(total, ring)
        lens_all = np.maximum(lens_all, lens)
    inner = ident.eye_dx - rw
    bridge = _soft(np.maximum(np.abs(xw) - F32(inner + 0.01), np.abs(yw - F32(cy - rh * 0.45)) - F32(thick * 0.5)), px)
    temple = _soft(np.maximum(F32(ident.eye_dx + rw) - np.abs(xw), np.abs(yw - F32(cy - rh * 0.5)) - F32(thick * 0.6)), px)
    total = np.maximum(np.maximum(total, bridge), temple * (lab != HAIR))
    lens_all = lens_all * fw * on_face
    total = total * on_face * np.maximum(fw, temple)
    if nz.glasses == 2:
        cv.paint(win, lens_all * F32(nz.glasses_dark), _rgb(0.05, 0.06, 0.07), EYE_G)
    else:
        cv.paint(win, lens_all * F32(0.12), _rgb(0.8, 0.9, 0.95), None)
        cv.claim(win, lens_all, EYE_G)
    cv.paint(win, total, frame, EYE_G, lit=1.0)


def _hat(cv, ident: Identity, nz: Nuisance, W) -> None:
    vol = ident.hair_volume + 0.05
    a, b, c = ident.head_w * (1 + vol), ident.head_h * (1 + vol), ident.head_w * 1.15 * (1 + vol)
    centre = (0.0, CRANIUM_CY - 0.02, -0.02)
    cov, s, x, y, z = cv.raycast(W, centre, (a, b, c))
    yn, zn = (y - F32(centre[1])) * F32(1 / b), z * F32(1 / c)
    edge = F32((nz.hat_line - CRANIUM_CY) / ident.head_h) + F32(0.25) * (F32(1) - zn)
    ha = cov * _soft((yn - edge) * F32(b), cv.px)
    col = _rgb(nz.hat_r, nz.hat_g, nz.hat_b)
    band = _soft(np.abs(yn - edge + F32(0.07)) * F32(b) - F32(0.03), cv.px)
    colour = col[:, None, None] * (F32(1) - F32(0.3) * band)[None]
    cv.paint(W, ha, colour, HAT, lit=0.9)
    cv.set_normal(W, ha, cv.view_normal(x, y, z, centre, (a, b, c)))


# --------------------------------------------------------------------------- light and camera


def _shade(cv: _Canvas, nz: Nuisance) -> np.ndarray:
    az, el = math.radians(nz.light_azimuth), math.radians(nz.light_elevation)
    L = (math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el))
    n = cv.normal
    lam = np.maximum(n[0] * F32(L[0]) + n[1] * F32(L[1]) + n[2] * F32(L[2]), 0)
    amb = nz.light_ambient
    shade = F32(amb * 1.1) + F32(1.2 * (1 - amb)) * lam
    shade = F32(1) + cv.lit * (shade - F32(1))
    tint = _rgb(1 + nz.light_tint, 1, 1 - nz.light_tint) * F32(nz.exposure)
    return cv.albedo * shade[None] * tint[:, None, None]


def _degrade(img: np.ndarray, nz: Nuisance, size: int) -> np.ndarray:
    if nz.noise > 0:
        bank = _bank()
        ou, ov = int(nz.noise_u * (512 - size)), int(nz.noise_v * (512 - size))
        img = img + bank[:, ov:ov + size, ou:ou + size] * F32(nz.noise * 0.7)
    img *= F32(255)
    img += F32(0.5)
    out = np.ascontiguousarray(np.clip(img, 0, 255, out=img).astype(np.uint8).transpose(1, 2, 0))
    if nz.blur > 0:
        from PIL import Image, ImageFilter

        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(nz.blur * size / 112)))
    return out

"""The renderer's compiled building blocks against plain-numpy references and hand cases."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from fsbench.generators.procedural import pixel, render
from fsbench.generators.procedural.params import draw_nuisance
from fsbench.generators.procedural.render import HAIR, SKIN, _bank, _blur_taps, _Camera, camera, surface


def _camera(yaw: float, pitch: float, roll: float) -> _Camera:
    return camera(replace(draw_nuisance(0, 0, 0), yaw=yaw, pitch=pitch, roll=roll), 64)


@pytest.mark.parametrize("yaw,pitch", [(0.0, 0.0), (35.0, -12.0), (-70.0, 20.0)])
def test_ray_hits_the_ellipsoid_front_and_normal_is_its_gradient(yaw: float, pitch: float) -> None:
    cv = _camera(yaw, pitch, 7.0)
    centre, axes = (0.05, -0.1, 0.02), (0.6, 0.8, 0.7)
    q = surface(cv, centre, axes)
    M = cv.M  # view -> head
    rng = np.random.default_rng(1)
    hits = misses = 0
    for pu, pv in rng.uniform(-1.1, 1.1, (300, 2)):
        cov, s = pixel.ray(q, pu, pv)
        # reference: solve |((M (pu, pv, s) - c) / a)|^2 = 1 for s with numpy's polynomial roots
        o = M @ np.array([pu, pv, 0.0]) - centre
        d = M @ np.array([0.0, 0.0, 1.0])
        roots = np.roots([np.sum((d / axes) ** 2), 2 * np.sum(o * d / np.square(axes)), np.sum((o / axes) ** 2) - 1])
        real = roots[np.abs(roots.imag) < 1e-9].real
        if len(real) == 0:  # a miss: less than half covered (anti-aliasing may show a fringe)
            misses += 1
            assert cov < 0.5
            continue
        hits += 1
        if np.ptp(real) > 0.3:  # well inside the outline
            assert cov == 1.0
        assert s == pytest.approx(real.max(), abs=1e-9)  # the front hit: nearest the camera (+z)
        h = M @ np.array([pu, pv, s]) - centre
        grad = M.T @ (2 * h / np.square(axes))  # the gradient, in view space
        n = np.array(pixel.normal(q, pu, pv, s))
        assert n / np.linalg.norm(n) == pytest.approx(grad / np.linalg.norm(grad), abs=1e-9)
        assert np.array(pixel.hit(M, pu, pv, s)) == pytest.approx(M @ np.array([pu, pv, s]), abs=1e-12)
    assert hits > 50 and misses > 20


def test_coverage_is_anti_aliased_over_about_a_pixel() -> None:
    px = 0.01
    assert pixel.soft(-1.0, px) == 1.0 and pixel.soft(1.0, px) == 0.0
    assert pixel.soft(0.0, px) == 0.5  # on the outline: half covered
    assert pixel.soft(0.25 * px, px) == pytest.approx(0.25)
    # an ellipse: 1 well inside, 0 well outside, 1/2 on the boundary
    assert pixel.ellipse(0.0, 0.0, 0.0, 0.0, 0.3, 0.2, px) == 1.0
    assert pixel.ellipse(0.3, 0.0, 0.0, 0.0, 0.3, 0.2, px) == pytest.approx(0.5)
    assert pixel.ellipse(0.0, 0.2 + 3 * px, 0.0, 0.0, 0.3, 0.2, px) == 0.0


def test_compositing_by_hand() -> None:
    albedo = np.zeros((3, 2, 2), np.float32)
    lit = np.full((2, 2), 0.25, np.float32)
    label = np.zeros((2, 2), np.uint8)
    pixel.paint_lit(albedo, lit, 1, 0, 0.25, 1.0, 0.5, 0.0, 1.0)
    assert albedo[:, 1, 0].tolist() == [0.25, 0.125, 0.0]
    assert lit[1, 0] == pytest.approx(0.25 + 0.75 * 0.25)
    pixel.paint(albedo, 1, 0, 1.0, 0.2, 0.2, 0.2)  # opaque: replaces
    assert albedo[:, 1, 0] == pytest.approx([0.2, 0.2, 0.2])
    pixel.claim(label, 0, 1, 0.5, 7)  # half is not more than half
    pixel.claim(label, 1, 1, 0.51, 7)
    assert label.tolist() == [[0, 0], [0, 7]]


@pytest.mark.parametrize("sigma", [0.3, 0.7, 1.4, 2.5])
def test_blur_is_a_discrete_gaussian_of_the_asked_variance(sigma: float) -> None:
    taps = _blur_taps(sigma).astype(np.float64)
    full = np.concatenate([taps[:0:-1], taps])  # both sides
    k = np.arange(len(full)) - (len(full) - 1) / 2
    assert full.sum() == pytest.approx(1.0, abs=1e-6)
    # a sampled Gaussian would give 0.0077 at sigma 0.3; truncating at 3 sigma + 1 costs < 0.5 %
    assert (full * k * k).sum() == pytest.approx(sigma * sigma, rel=5e-3)
    assert np.all(np.diff(taps) < 0)
    assert _blur_taps(0.0).tolist() == [1.0]
    assert math.isclose(taps[0], math.exp(-sigma * sigma) * np.i0(sigma * sigma), rel_tol=1e-3)


# --------------------------------------------------------------------------- float32 row passes


def test_sin32_and_exp_neg32_match_libm() -> None:
    for lim, tol in ((10, 3e-7), (200, 1e-5)):
        x = np.linspace(-lim, lim, 4001).astype(np.float32)
        got = np.array([pixel.sin32(v) for v in x], np.float64)
        assert np.abs(got - np.sin(x.astype(np.float64))).max() < tol
    assert pixel.sin32(np.float32(0.0)) == 0.0
    assert pixel.sin32(np.float32(math.pi / 2)) == pytest.approx(1.0, abs=1e-6)
    assert pixel.sin32(np.float32(-3 * math.pi / 2)) == pytest.approx(1.0, abs=1e-6)  # odd k: the sign flips
    t = np.linspace(-16, 0, 3201).astype(np.float32)
    ref = np.exp(t.astype(np.float64))
    got = np.array([pixel.exp_neg32(v) for v in t], np.float64)
    assert np.abs(got - ref).max() < 1e-6 and np.abs(got / ref - 1).max() < 2e-3  # relative: off only where tiny
    assert pixel.exp_neg32(np.float32(0.0)) == 1.0
    assert 0 < pixel.exp_neg32(np.float32(-40.0)) < 1.2e-7  # clamped at -16: tiny, never negative


@pytest.mark.parametrize("yaw,pitch", [(0.0, 0.0), (-40.0, 15.0)])
def test_float32_ray_normal_and_hit_agree_with_float64(yaw: float, pitch: float) -> None:
    cv = _camera(yaw, pitch, -5.0)
    q = surface(cv, (0.0, -0.05, 0.0), (0.74, 1.0, 0.85))
    q32, m32 = pixel.surface32(q), pixel.matrix32(cv.M)
    for pu, pv in np.random.default_rng(2).uniform(-1.0, 1.0, (200, 2)).astype(np.float32):
        cov, s = pixel.ray(q, float(pu), float(pv))
        cov32, s32 = pixel.ray32(q32, pu, pv)
        assert cov32 == pytest.approx(cov, abs=2e-4)
        if cov > 0:
            assert s32 == pytest.approx(s, abs=2e-4)
            assert pixel.normal32(q32, pu, pv, s32) == pytest.approx(pixel.normal(q, float(pu), float(pv), s), abs=1e-3)
            assert pixel.hit32(m32, pu, pv, s32) == pytest.approx(pixel.hit(cv.M, float(pu), float(pv), s), abs=2e-4)


def test_row_passes_match_numpy() -> None:
    rng = np.random.default_rng(3)
    n = 37
    dst, col, shade, blush, u, v, s = (rng.uniform(-1, 1, n).astype(np.float32) for _ in range(7))
    a = np.clip(rng.uniform(-0.5, 1.5, n), 0, 1).astype(np.float32)  # some 0, some 1, some between
    f = np.float32

    def check(fn, expected, *args, out=None):
        got = dst.copy() if out is None else out.copy()
        fn(got, *args)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)

    check(pixel.blend_row_to, dst + (f(0.9) - dst) * a, a, f(0.9))
    check(pixel.blend_shaded_row, dst + (f(0.3) * shade - dst) * a, a, f(0.3), shade)
    check(pixel.blend_skin_row, dst + (f(0.6) * shade + f(-0.15) * blush - dst) * a, a, shade, f(0.6), blush, f(-0.15))
    check(pixel.put_row, np.where(a > 0.5, col, dst), col, a, f(0.5))
    check(pixel.put_normal_row, np.where(a > 0.5, f(0.2) * u - f(0.7) * v + f(1.5) * s + f(0.1), dst),
          a, u, v, s, f(0.2), f(-0.7), f(1.5), f(0.1))
    label = rng.integers(0, 19, n).astype(np.uint8)
    check(pixel.claim_row, np.where(a > 0.5, 13, label).astype(np.uint8), a, 13, out=label)
    # a blend with no coverage leaves the row exactly as it was
    check(pixel.blend_row_to, dst, np.zeros(n, np.float32), f(0.9))


def _head_reference(maps, cran, jaw, m, tex, tu, tv, grain, blush, rgb) -> None:
    """The skin layer pixel by pixel in float64: the scalar loop `_head_px` replaced."""
    albedo, nrm, label, lit, pu, pv, hx, hy, front, depth = maps
    for i, j in np.ndindex(label.shape):
        u, v = float(pu[i, j]), float(pv[i, j])
        cov1, s1 = pixel.ray(cran, u, v)
        cov2, s2 = pixel.ray(jaw, u, v)
        if cov1 <= 0 and cov2 <= 0:
            continue
        behind = cov1 <= 0.5
        s = s2 if (s2 > s1 and cov2 > 0.5) or behind else s1
        a = max(cov1, cov2)
        if a > 0.5:
            wj = 1.0 if behind else min(max((s2 - s1) * 12 + 0.5, 0.0), 1.0)
            n1, n2 = np.array(pixel.normal(cran, u, v, s)), np.array(pixel.normal(jaw, u, v, s))
            nrm[:, i, j] = n1 + (n2 - n1) * wj
            label[i, j] = 1
        depth[i, j] = s
        x, y, z = pixel.hit(m, u, v, s)
        t = 1 + tex[int(y * 60 + tv) & 511, int(x * 60 + tu) & 511] * grain
        ch = blush * min(max(1 - ((abs(x) - 0.33) * 5) ** 2 - ((y - 0.28) * 4.5) ** 2, 0.0), 1.0)
        colour = np.array(rgb) * t + np.array([0.5, -0.15, -0.1]) * ch
        albedo[:, i, j] += (colour - albedo[:, i, j]) * a
        lit[i, j] += (1 - lit[i, j]) * a
        hx[i, j], hy[i, j], front[i, j] = x, y, min(max((z - 0.05) * 8, 0.0), 1.0)


def _hair_reference(maps, q, m, hl, px, curly, rgb) -> None:
    """The hair layer pixel by pixel in float64 with libm's exp and sin: the scalar loop
    `_hair_px` replaced."""
    albedo, nrm, label, lit, pu, pv = maps[:6]
    a_, b_, c_, cy, line0, widow, recede, fringe, part, side, back = hl
    for i, j in np.ndindex(label.shape):
        u, v = float(pu[i, j]), float(pv[i, j])
        cov, s = pixel.ray(q, u, v)
        if cov <= 0:
            continue
        x, y, z = pixel.hit(m, u, v, s)
        xn, yn, zn = x / a_, (y - cy) / b_, z / c_
        fr = xn * xn * recede + line0 - widow * math.exp(-64 * xn * xn)
        fr += min(max(1 - 1.6 * abs(xn - part * 0.5), 0.0), 1.0) * fringe
        wf = min(max((zn - 0.15) * 2.4, 0.0), 1.0)
        rest = min(max(-2.5 * zn, 0.0), 1.0) * (back - side) + side
        fr = (fr - rest) * wf + rest
        a = min(max(0.5 - (yn - fr) * b_ / (px * 1.5), 0.0), 1.0) * cov
        if a <= 0:
            continue
        if curly:
            streak = 1 + 0.12 * math.sin(math.sin(yn * 31) * 2.5 + xn * 38)
        else:
            streak = 1 + 0.06 * math.sin(xn * 70 + yn * 12 + part * 10)
        albedo[:, i, j] += (np.array(rgb) * streak - albedo[:, i, j]) * a
        lit[i, j] += (0.9 - lit[i, j]) * a
        if a > 0.5:
            label[i, j] = HAIR
            nrm[:, i, j] = pixel.normal(q, u, v, s)


def _copy(maps):
    return tuple(np.array(x) for x in maps)


def _assert_layers_agree(ref, got) -> None:
    albedo, nrm, label, lit = (np.asarray(x, np.float64) for x in got[:4])
    r_albedo, r_nrm, r_label, r_lit = (np.asarray(x, np.float64) for x in ref[:4])
    flips = np.argwhere(label != r_label)
    assert len(flips) <= 3, flips  # a pixel covered within float32 rounding of one half may flip
    same = label == r_label
    np.testing.assert_allclose(albedo[:, same], r_albedo[:, same], atol=2e-3)
    np.testing.assert_allclose(lit, r_lit, atol=2e-3)
    n, r_n = nrm[:, same], r_nrm[:, same]
    cos = (n * r_n).sum(0) / np.linalg.norm(n, axis=0) / np.linalg.norm(r_n, axis=0)
    assert cos.min() > 1 - 1e-5
    for k in range(4, len(ref)):
        np.testing.assert_allclose(np.asarray(got[k], np.float64), np.asarray(ref[k], np.float64), atol=5e-4)


@pytest.mark.parametrize("yaw,pitch,curly", [(0.0, 0.0, False), (35.0, -12.0, True), (-70.0, 20.0, False)])
def test_head_and_hair_row_passes_match_the_per_pixel_loops(yaw: float, pitch: float, curly: bool) -> None:
    cv = _camera(yaw, pitch, 4.0)
    full = (0, 64, 0, 64)
    # skin: cranium and jaw, a textured, blushing head
    cran = surface(cv, (0.0, -0.05, 0.0), (0.74, 1.0, 0.85))
    jaw = surface(cv, (0.0, 0.42, 0.02), (0.52, 0.4, 0.62))
    tex = _bank()[0]
    args = (cran, jaw, cv.M, tex, 120.0, 37.0, 0.06, 0.4, (0.8, 0.6, 0.5))
    cv.maps[0][:] = 0.3  # the albedo: a blank canvas leaves it to the background layer
    ref, got = _copy(cv.maps), _copy(cv.maps)
    _head_reference(ref, *args)
    render._head_px(got, full, *args[:-1], *args[-1])
    assert (ref[2] == SKIN).sum() > 1000  # the head fills much of the frame
    _assert_layers_agree(ref, got)
    # hair over it: a shell a little larger than the cranium, cut by a hairline with a widow's peak and a fringe
    shell = (0.8, 1.06, 0.92)
    q = surface(cv, (0.0, -0.08, -0.02), shell)
    hl = (*shell, -0.08, -0.55, 0.12, 0.3, 0.2, 0.3, 0.55, 0.6)
    _hair_reference(ref, q, cv.M, hl, cv.px, curly, (0.3, 0.2, 0.1))
    render._hair_px(got, full, q, cv.M, hl, cv.px, render.CURLY if curly else render.MEDIUM, 1.0, 0.3, 0.2, 0.1)
    assert (ref[2] == HAIR).sum() > 200
    _assert_layers_agree(ref, got)

"""The renderer's compiled building blocks against plain-numpy references and hand cases."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from generators.procedural import pixel
from generators.procedural.params import draw_nuisance
from generators.procedural.render import _blur_taps, _Camera, camera, surface


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

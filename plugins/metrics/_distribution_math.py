"""The numbers behind fid, kid and prdc: pure numpy/scipy, no images, no torch.

Definitions follow REFERENCE.md ("Distribution metrics"): the Fréchet distance of pytorch-fid,
KID of torch-fidelity, precision/recall of Kynkäänniemi et al. (2019) and density/coverage
of Naeem et al. (2020), the last two as the authors' `prdc` package computes them (strict
"<" against the k-th neighbour radius, the point itself not counted as a neighbour).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import linalg

__all__ = ["KIDEstimate", "frechet_distance", "kid", "polynomial_mmd2", "prdc", "knn_radii", "statistics_problem"]


# --------------------------------------------------------------------------- Fréchet distance


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; round-off negative eigenvalues count as 0."""
    w, v = np.linalg.eigh(s)  # LAPACK syevd: divide and conquer, the fastest with vectors
    w = np.sqrt(np.clip(w, 0.0, None))
    return (v * w) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr(sqrtm(S1 S2)) for PSD S1, S2.

    S1 S2 is similar to A S2 A^T for any A with A A^T = S1, which is symmetric PSD, so its
    eigenvalues are real and non-negative and one symmetric eigenvalue problem replaces
    the general (Schur-based, complex) square root of a non-symmetric matrix. A is the
    Cholesky factor when S1 is positive definite (a third of the cost of an
    eigendecomposition) and the symmetric square root sqrtm(S1) otherwise (N <= d samples).
    """
    try:
        a = linalg.cholesky(s1, lower=True)  # (d, d) S1 = A A^T
    except linalg.LinAlgError:
        a = _psd_sqrt(s1)
    m = a.T @ s2 @ a
    m = (m + m.T) / 2  # (d, d) exactly symmetric for eigvalsh
    w = linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def statistics_problem(mu: np.ndarray, sigma: np.ndarray) -> str | None:
    """Why (mu, sigma) is not a mean and a covariance, or None.

    A covariance is finite, symmetric and positive semi-definite. Round-off leaves tiny
    negative eigenvalues in real ones (allowed down to -1e-6 x the largest); a clearly
    negative one makes Tr(sqrtm(S1 S2)) meaningless (a negated sigma gave FID -72)."""
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        return f"mu {mu.shape} and sigma {sigma.shape} are not a mean (d,) and its covariance (d, d)"
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        return "mu or sigma holds NaN or infinite values"
    scale = float(np.abs(sigma).max()) if sigma.size else 0.0
    asym = float(np.abs(sigma - sigma.T).max()) if sigma.size else 0.0
    if asym > 1e-6 * max(scale, 1e-300):
        return f"sigma is not symmetric (largest |S - S^T| = {asym:.3g}), so not a covariance"
    w = linalg.eigvalsh((sigma + sigma.T) / 2) if sigma.size else np.zeros(0)
    if w.size and w[0] < -1e-6 * max(float(w[-1]), 0.0):
        return (f"sigma has a negative eigenvalue ({w[0]:.3g}; largest {w[-1]:.3g}): "
                "not a covariance (positive semi-definite)")
    return None


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2)), in float64."""
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"statistics do not match: means {mu1.shape} and {mu2.shape}, "
            f"covariances {s1.shape} and {s2.shape}"
        )
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))


# --------------------------------------------------------------------------- KID


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + coef0)^degree; x and y both (m, d)."""
    m, d = x.shape
    gamma = 1.0 / d
    kxx = (x @ x.T * gamma + coef0) ** degree  # (m, m)
    kyy = (y @ y.T * gamma + coef0) ** degree
    kxy = (x @ y.T * gamma + coef0) ** degree
    off_xx = kxx.sum() - np.trace(kxx)
    off_yy = kyy.sum() - np.trace(kyy)
    return float((off_xx + off_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


class KIDEstimate(NamedTuple):
    mean: float  # MMD^2 averaged over the subsets
    std: float  # their spread (ddof 0); NaN when there was only one distinct subset
    subset_size: int  # rows of each set per subset (capped at the smaller set)
    subsets: int  # MMD^2 values averaged: 1 when every subset is the whole of both sets


def kid(
    x: np.ndarray,
    y: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KIDEstimate:
    """KID as torch-fidelity: mean and std (ddof 0) of MMD^2 over random subsets.

    Each subset draws `subset_size` rows of each set without replacement from one
    `np.random.RandomState(seed)` (x first, then y, as torch-fidelity does). torch-fidelity
    refuses sets smaller than the subset; here the size is capped at the smaller set, and
    the size used is returned so the caller can say so. When the cap makes every subset the
    whole of both sets, every draw is a permutation of the same two sets and MMD^2 ignores
    order: the subsets would repeat one number, and their std (round-off, ~1e-17) would look
    like a measured spread. Then the estimate is one MMD^2 of the whole sets, std NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} and {y.shape[1]}")
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(x)} and {len(y)}")
    if len(x) == len(y) == size:
        return KIDEstimate(polynomial_mmd2(x, y), float("nan"), size, 1)
    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets, dtype=np.float64)
    for i in range(subsets):
        xs = x[rng.choice(len(x), size, replace=False)]
        ys = y[rng.choice(len(y), size, replace=False)]
        mmds[i] = polynomial_mmd2(xs, ys)
    return KIDEstimate(float(mmds.mean()), float(mmds.std()), size, subsets)


# --------------------------------------------------------------------------- PRDC


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _distances(a: np.ndarray, b: np.ndarray, a2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b)) from precomputed squared norms."""
    d2 = a2[:, None] + b2[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.clip(d2, 0.0, None))


def knn_radii(x: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row, chunked over rows.

    The row itself sits at distance 0 and takes the first place, so this is the (k+1)-th
    smallest entry of each row of the distance matrix, as in the authors' code.
    """
    if len(x) <= k:
        raise ValueError(f"k = {k} nearest neighbours need more than {k} samples, got {len(x)}")
    x2 = _sq_norms(x)
    radii = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), chunk):
        d = _distances(x[start : start + chunk], x, x2[start : start + chunk], x2)  # (c, N)
        radii[start : start + chunk] = np.partition(d, k, axis=1)[:, k]
    return radii


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, chunk: int = 256) -> dict[str, float]:
    """Precision, recall, density and coverage of `fake` against `real`.

    Never builds more than a (chunk, N) block of distances, so 50k x 50k sets fit in memory.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} and {fake.shape[1]}")
    r_real = knn_radii(real, k, chunk)  # (N,)
    r_fake = knn_radii(fake, k, chunk)  # (M,)
    real2, fake2 = _sq_norms(real), _sq_norms(fake)

    # Pass over fake chunks: each fake sample against every real ball.
    in_real_balls = np.empty(len(fake), dtype=np.int64)  # how many real balls hold fake j
    for start in range(0, len(fake), chunk):
        d = _distances(fake[start : start + chunk], real, fake2[start : start + chunk], real2)  # (c, N)
        in_real_balls[start : start + chunk] = (d < r_real[None, :]).sum(axis=1)

    # Pass over real chunks: recall (real i inside some fake ball), coverage (nearest fake
    # inside real i's own ball).
    recalled = np.empty(len(real), dtype=bool)
    covered = np.empty(len(real), dtype=bool)
    for start in range(0, len(real), chunk):
        d = _distances(real[start : start + chunk], fake, real2[start : start + chunk], fake2)  # (c, M)
        recalled[start : start + chunk] = (d < r_fake[None, :]).any(axis=1)
        covered[start : start + chunk] = d.min(axis=1) < r_real[start : start + chunk]

    return {
        "precision": float((in_real_balls > 0).mean()),
        "recall": float(recalled.mean()),
        "density": float(in_real_balls.sum() / (k * len(fake))),
        "coverage": float(covered.mean()),
    }

"""Array-level identity metrics: the numbers behind `cst`, `sep`, `div`, `iou`, `leakage`,
`uniqueness` and `consistency`, free of any dataset or context so they can be tested on
plain arrays.

Conventions: `vectors` are (N, D) float32 unit rows, `labels` (N,) int64 class indices in
[0, C). Classes with no rows (every image of an identity failed to embed) are simply absent
from the results. Definitions follow REFERENCE.md (VIGFace Section 5.2, DCFace).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fsbench.errors import MetricError

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "PairSample",
    "check_finite",
    "class_centres",
    "class_sums",
    "class_counts",
    "cst_per_class",
    "sep_per_item",
    "nearest_centre",
    "histogram_iou",
    "genuine_similarities",
    "imposter_similarities",
    "threshold_at_fmr",
    "per_class_mean",
    "per_class_var",
]

DEFAULT_BLOCK_BYTES = 64 * 2**20  # one similarity block at most (float32), whatever N and C


def check_finite(vectors: np.ndarray, what: str = "dataset") -> None:
    """NaN/inf embeddings poison every mean silently; refuse them by count instead."""
    bad = int((~np.isfinite(vectors).all(axis=1)).sum()) if len(vectors) else 0
    if bad:
        raise MetricError(
            f"{bad} of {len(vectors)} {what} embeddings contain NaN or inf values; "
            "the embedder produced invalid vectors (check its weights and the images)"
        )


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=n_classes).astype(np.int64)


def class_sums(vectors: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Sum of rows per class, (C, D) float64, via one sort + reduceat (no N x C one-hot)."""
    sums = np.zeros((n_classes, vectors.shape[1]), dtype=np.float64)
    if len(vectors) == 0:
        return sums
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    sums[sorted_labels[starts]] = np.add.reduceat(vectors[order].astype(np.float64), starts, axis=0)
    return sums


def class_centres(vectors: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean of each class's unit rows, renormalised to unit length; (C, D) float32.

    Empty classes (and the degenerate case of a zero mean) get a zero row, which has cosine
    0 with everything; callers exclude empty classes by their counts.
    """
    sums = class_sums(vectors, labels, n_classes)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        centres = np.where(norms > 0, sums / norms, 0.0)
    return centres.astype(np.float32)


def cst_per_class(vectors: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """VIGFace Eq. 10 per class: mean cosine over all N x N ordered pairs, diagonal included.

    The double sum of f_i . f_j over a class equals ||sum_i f_i||^2, so CST_k is the squared
    length of the class mean: O(N D) instead of O(N^2 D). Classes with N < 2 give NaN.
    Returns (cst (C,) float64, counts (C,) int64).
    """
    counts = class_counts(labels, n_classes)
    sums = class_sums(vectors, labels, n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        cst = (sums * sums).sum(axis=1) / counts.astype(np.float64) ** 2
    cst[counts < 2] = np.nan
    return cst, counts


def nearest_centre(
    queries: np.ndarray,
    centres: np.ndarray,
    exclude: np.ndarray | None = None,
    *,
    valid: np.ndarray | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the highest cosine to any centre and which centre it is.

    `exclude` (N,) names one centre per query to skip (its own class: NNCCS); `valid` (C,)
    bool masks out centres that do not exist (empty classes). The N x C similarity matrix is
    never built: queries and centres are tiled so one float32 block stays within
    `block_bytes`, and a running maximum is kept, so extra memory does not grow with N.
    Returns (max similarity (N,) float32, argmax (N,) int64); -inf/-1 when no centre is left.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    centres = np.ascontiguousarray(centres, dtype=np.float32)
    n, c = len(queries), len(centres)
    best = np.full(n, -np.inf, dtype=np.float32)
    arg = np.full(n, -1, dtype=np.int64)
    if n == 0 or c == 0:
        return best, arg
    # Rows per block: whole centre matrix per row block when it fits, else tile the centres.
    cols = min(c, max(1, block_bytes // (4 * min(n, 1024))))
    rows = max(1, min(n, block_bytes // (4 * cols)))
    block = np.empty((rows, cols), dtype=np.float32)
    invalid_cols = None if valid is None else np.flatnonzero(~np.asarray(valid, dtype=bool))
    for c0 in range(0, c, cols):
        c1 = min(c, c0 + cols)
        ct = centres[c0:c1].T  # (D, cb)
        dead = None
        if invalid_cols is not None:
            dead = invalid_cols[(invalid_cols >= c0) & (invalid_cols < c1)] - c0
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            s = block[: r1 - r0, : c1 - c0]
            np.matmul(queries[r0:r1], ct, out=s)  # (rb, cb)
            if dead is not None and len(dead):
                s[:, dead] = -np.inf
            if exclude is not None:
                own = exclude[r0:r1]
                hit = np.flatnonzero((own >= c0) & (own < c1))
                s[hit, own[hit] - c0] = -np.inf
            j = s.argmax(axis=1)
            m = s[np.arange(r1 - r0), j]
            better = m > best[r0:r1]
            best[r0:r1][better] = m[better]
            arg[r0:r1][better] = j[better] + c0
    return best, arg


def sep_per_item(
    vectors: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VIGFace Eq. 13-14 per image: CCS (cosine to its own renormalised class centre) and
    NNCCS (highest cosine to any OTHER non-empty class centre).

    Returns (ccs (N,), nnccs (N,), nearest other class (N,)); SEP_k is the class mean of
    ccs / nnccs.
    """
    counts = class_counts(labels, n_classes)
    if int((counts > 0).sum()) < 2:
        raise MetricError(
            f"SEP needs >= 2 identities with embeddings; the dataset has {int((counts > 0).sum())}"
        )
    centres = class_centres(vectors, labels, n_classes)
    ccs = np.einsum("nd,nd->n", vectors.astype(np.float32), centres[labels])
    nnccs, nearest = nearest_centre(vectors, centres, labels, valid=counts > 0, block_bytes=block_bytes)
    return ccs.astype(np.float64), nnccs.astype(np.float64), nearest


def per_class_mean(values: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean of per-item values within each class; NaN for empty classes."""
    counts = np.bincount(labels, minlength=n_classes)
    sums = np.bincount(labels, weights=values, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def per_class_var(values: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Population variance (1/N, VIGFace Eq. 11) within each class; NaN for empty classes."""
    mean = per_class_mean(values, labels, n_classes)
    dev = values - mean[labels]
    return per_class_mean(dev * dev, labels, n_classes)


# --------------------------------------------------------------------------- pair similarities


@dataclass(frozen=True)
class PairSample:
    """Cosine similarities of a set of pairs, and whether they are all of them or a sample."""

    sims: np.ndarray  # (P,) float32
    total: int  # how many such pairs exist
    sampled: bool


def _pairs_within(counts: np.ndarray) -> int:
    return int((counts * (counts - 1) // 2).sum())


def genuine_similarities(
    vectors: np.ndarray, labels: np.ndarray, n_classes: int, *, max_pairs: int, seed: int
) -> PairSample:
    """Cosines of unordered same-identity pairs (i < j); all of them unless there are more
    than `max_pairs`, then a uniform seeded sample of that many (with replacement)."""
    counts = class_counts(labels, n_classes)
    total = _pairs_within(counts)
    if total == 0:
        return PairSample(np.empty(0, np.float32), 0, False)
    order = np.argsort(labels, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    if total <= max_pairs:
        out, pos = np.empty(total, dtype=np.float32), 0
        for k in np.flatnonzero(counts >= 2):
            block = vectors[order[starts[k] : starts[k] + counts[k]]].astype(np.float32)
            g = block @ block.T
            iu = np.triu_indices(len(block), 1)
            out[pos : pos + len(iu[0])] = g[iu]
            pos += len(iu[0])
        return PairSample(out, total, False)
    # Sample: pick a class with probability proportional to its pair count, then two distinct members.
    rng = np.random.default_rng(seed)
    weights = (counts * (counts - 1) / 2).astype(np.float64)
    k = rng.choice(n_classes, size=max_pairs, p=weights / weights.sum())
    a = rng.integers(0, counts[k])
    b = rng.integers(0, counts[k] - 1)
    b = b + (b >= a)
    i, j = order[starts[k] + a], order[starts[k] + b]
    sims = np.einsum("nd,nd->n", vectors[i].astype(np.float32), vectors[j].astype(np.float32))
    return PairSample(sims.astype(np.float32), total, True)


def imposter_similarities(
    vectors: np.ndarray, labels: np.ndarray, n_classes: int, *, max_pairs: int, seed: int
) -> PairSample:
    """Cosines of unordered different-identity pairs; all when there are at most `max_pairs`,
    else a uniform seeded sample (with replacement) of `max_pairs` of them."""
    n = len(vectors)
    counts = class_counts(labels, n_classes)
    total = n * (n - 1) // 2 - _pairs_within(counts)
    if total == 0:
        return PairSample(np.empty(0, np.float32), 0, False)
    v = vectors.astype(np.float32)
    if total <= max_pairs:
        parts = []
        step = max(1, (16 * 2**20) // (4 * max(n, 1)))
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            g = v[r0:r1] @ v.T  # (rb, N)
            ii, jj = np.nonzero(np.arange(n)[None, :] > np.arange(r0, r1)[:, None])
            keep = labels[r0 + ii] != labels[jj]
            parts.append(g[ii[keep], jj[keep]])
        return PairSample(np.concatenate(parts).astype(np.float32), total, False)
    # Rejection sampling of ordered pairs with different labels; cheap because imposters
    # dominate whenever there are that many of them.
    rng = np.random.default_rng(seed)
    got_i, got_j, have = [], [], 0
    while have < max_pairs:
        i = rng.integers(0, n, size=2 * (max_pairs - have) + 16)
        j = rng.integers(0, n, size=len(i))
        ok = labels[i] != labels[j]
        got_i.append(i[ok])
        got_j.append(j[ok])
        have += int(ok.sum())
    i = np.concatenate(got_i)[:max_pairs]
    j = np.concatenate(got_j)[:max_pairs]
    sims = np.einsum("nd,nd->n", v[i], v[j])
    return PairSample(sims.astype(np.float32), total, True)


def histogram_iou(a: np.ndarray, b: np.ndarray, bins: int = 100) -> tuple[float, np.ndarray, np.ndarray]:
    """VIGFace Table 1: normalised histograms over [-1, 1] with shared bins; sum(min)/sum(max).

    Returns (IoU, hist_a, hist_b); NaN when either side has no pairs.
    """
    edges = np.linspace(-1.0, 1.0, bins + 1)
    # Clip so that 1.0000001 from float rounding lands in the last bin rather than nowhere.
    ha = np.histogram(np.clip(a, -1.0, 1.0), bins=edges)[0].astype(np.float64)
    hb = np.histogram(np.clip(b, -1.0, 1.0), bins=edges)[0].astype(np.float64)
    if ha.sum() == 0 or hb.sum() == 0:
        return math.nan, ha, hb
    ha /= ha.sum()
    hb /= hb.sum()
    return float(np.minimum(ha, hb).sum() / np.maximum(ha, hb).sum()), ha, hb


def threshold_at_fmr(imposter: np.ndarray, fmr: float) -> float:
    """The similarity above which at most `fmr` of the imposter pairs fall ("match" = sim > t).

    t is the (floor(fmr * P) + 1)-th largest imposter similarity; with P < 1 / fmr that is the
    largest one, so nothing scored as a match is above every observed imposter.
    """
    if len(imposter) == 0:
        raise MetricError("no imposter pairs in the reference set: it needs >= 2 identities")
    s = np.sort(np.asarray(imposter, dtype=np.float64))
    k = int(math.floor(fmr * len(s)))
    return float(s[len(s) - 1 - k])

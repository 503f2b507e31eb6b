"""fsbench's metrics on numpy arrays, for notebooks and scripts.

    import fsbench
    fsbench.metrics.cst(E, labels)            # E (N, D) embeddings, labels (N,) ints or names
    fsbench.metrics.sep(E, labels)
    fsbench.metrics.iou(E, labels, E_ref, labels_ref)
    fsbench.metrics.fd(X, Y)                  # X the evaluated set, Y the reference
    fsbench.metrics.verification(E1, E2, same)

There is no second implementation here: each function wraps the arrays as a dataset
(`fsbench.precomputed`) and runs the registered metric plugin that ``fsbench evaluate
--metrics NAME`` runs, so the numbers are the ones `evaluate` prints for the same vectors
(``fsbench evaluate --embeddings file.npz`` takes the same arrays from a file).
`verification` calls `fsbench.verification`, the protocol of ``fsbench verify``.

Identity metrics (cst, sep, iou, and `score` for leakage, uniqueness, consistency)
L2-normalise the rows first, as REFERENCE.md defines them; fd, kid and prdc take features as
given. Shapes are checked first (a one-line ValueError naming the argument); a metric that is
undefined for the input (SEP of one identity) raises `fsbench.errors.MetricError`.
Definitions: REFERENCE.md ("Identity metrics", "Distribution metrics", "Verification protocol").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from fsbench.api import MetricResult
    from fsbench.precomputed import Precomputed
    from fsbench.verification import VerificationResult

__all__ = ["MeanStd", "cst", "div", "fd", "iou", "kid", "prdc", "score", "sep", "verification"]

_NAMES = {"embeddings": "E", "labels": "labels", "reference_embeddings": "E_ref",
          "reference_labels": "labels_ref", "serfiq": "serfiq"}


@dataclass(frozen=True)
class MeanStd:
    """A mean over identities (cst, sep, div) or KID subsets, its std (ddof 0), and how many
    values it averages: what `evaluate` shows as "mean ± std". ``float(x)`` is the mean."""

    mean: float
    std: float
    n: int

    def __float__(self) -> float:
        return self.mean


# --------------------------------------------------------------------------- plumbing


def _arrays(E: Any, labels: Any = None, E_ref: Any = None, labels_ref: Any = None, serfiq: Any = None,
            *, unit: bool = False) -> Precomputed:
    """The arguments as a checked `Precomputed` (labels default to one identity)."""
    from fsbench.precomputed import from_arrays

    E = np.asarray(E)
    arrays: dict[str, Any] = {"embeddings": E, "labels": np.zeros(len(E), np.int64) if labels is None else labels}
    if E_ref is not None:
        E_ref = np.asarray(E_ref)
        arrays["reference_embeddings"] = E_ref
        arrays["reference_labels"] = np.zeros(len(E_ref), np.int64) if labels_ref is None else labels_ref
    if serfiq is not None:
        arrays["serfiq"] = serfiq
    pre = from_arrays(arrays, names=_NAMES)
    if unit:  # cosines need a direction: refuse zero rows rather than drop them with a warning
        for side, name in ((pre.dataset, "E"), (pre.reference, "E_ref")):
            if side is not None and (zero := np.flatnonzero(~np.any(side.vectors, axis=1))).size:
                raise ValueError(f"{name}: {zero.size} rows are all zero (first: row {int(zero[0])}); "
                                 "a cosine needs a direction")
    return pre


def _run(spec: str, pre: Precomputed, *, seed: int = 0, **options: Any) -> MetricResult:
    """Run the registered metric `spec` on the arrays, exactly as `evaluate` runs it."""
    from fsbench.registry import get_registry

    metric = get_registry().metric(spec, **options)
    ctx = pre.context(seed=seed)
    for need in sorted(metric.needs - {"images"}):
        ctx.require(need, spec)
    return metric.compute(ctx)


def _mean_std(result: MetricResult, n: str = "n_identities") -> MeanStd:
    s = result.scalars
    return MeanStd(s["mean"], s["std"], int(s[n]))


def score(metric: str, E: Any, labels: Any = None, E_ref: Any = None, labels_ref: Any = None, *,
          serfiq: Any = None, seed: int = 0, **options: Any) -> MetricResult:
    """Any registered metric on arrays, with its full result: every scalar, the per-identity
    table (`per_item`), notes and feature space, as `evaluate` saves them.

    `metric` is a name of ``fsbench plugins`` (cst, sep, iou, leakage, uniqueness,
    consistency, div, fd, kid, prdc...); `options` are its ``-o`` keys, e.g.
    ``score("leakage", E, y, E_ref, y_ref, fmr=1e-4)``. `seed` is `evaluate --seed`.
    """
    pre = _arrays(E, labels, E_ref, labels_ref, serfiq)
    return _run(metric, pre, seed=seed, **options)


# --------------------------------------------------------------------------- identity metrics


def cst(E: Any, labels: Any) -> MeanStd:
    """Intra-class consistency, VIGFace Eq. 10 (REFERENCE.md "CST_k").

    Per identity k with N_k rows: CST_k = (1 / N_k^2) sum_i sum_j cos(f_i, f_j) over all
    ordered pairs, the diagonal included; identities with fewer than 2 rows are left out.
    Returns the mean and std over identities. E (N, D), labels (N,) ints or names.
    """
    return _mean_std(_run("cst", _arrays(E, labels, unit=True)))


def sep(E: Any, labels: Any, *, block_mb: int = 64) -> MeanStd:
    """Inter-class separability, VIGFace Eq. 13-14 (REFERENCE.md "SEP_k").

    c_k = renormalised mean of identity k's unit rows; per row, CCS = cos(f_i, c_k) and
    NNCCS = max over other identities j of cos(f_i, c_j); SEP_k = mean over k's rows of
    CCS / NNCCS. Returns mean and std over identities; needs at least two identities.
    `block_mb` bounds the memory of one similarity block (not the result).
    """
    return _mean_std(_run("sep", _arrays(E, labels, unit=True), block_mb=block_mb))


def div(serfiq: Any, labels: Any) -> MeanStd:
    """Intra-class diversity, VIGFace Eq. 11-12 (REFERENCE.md "DIV_k"): the population
    variance (1/N) of the SER-FIQ scores within each identity; mean and std over identities.

    DIV is a statistic of per-image quality scores, not of embeddings: SER-FIQ needs the
    network (m = 100 dropout passes, q = 2 / (1 + exp(mean pairwise distance))), so pass
    the scores, (N,), e.g. from an IResNet embedder's ``serfiq(images)``.
    """
    q = np.asarray(serfiq)
    if q.ndim != 1:
        raise ValueError(f"serfiq has shape {q.shape}, expected (N,): one SER-FIQ score per image")
    return _mean_std(_run("div", _arrays(np.zeros((len(q), 1)), labels, serfiq=q)))


def iou(E: Any, labels: Any, E_ref: Any, labels_ref: Any, *, bins: int = 100, max_pairs: int = 2_000_000,
        seed: int = 0) -> dict[str, float]:
    """Similarity-distribution IoU with a reference set, VIGFace Table 1 (REFERENCE.md "Similarity IoU").

    Cosines of genuine (same-identity) and imposter pairs of each set, histogrammed over
    [-1, 1] with `bins` shared bins and normalised to sum 1; IoU = sum(min) / sum(max).
    Returns {"mean", "genuine", "imposter"} (mean = the average of the two). Above
    `max_pairs` pairs of one kind, a seeded sample of that many is used.
    """
    result = _run("iou", _arrays(E, labels, E_ref, labels_ref, unit=True), seed=seed, bins=bins, max_pairs=max_pairs)
    return {k: result.scalars[k] for k in ("mean", "genuine", "imposter")}


# --------------------------------------------------------------------------- distribution metrics


def fd(X: Any, Y: Any) -> float:
    """Fréchet distance of two feature sets (pytorch-fid's formula; REFERENCE.md "FID"):
    ||mu_X - mu_Y||^2 + Tr(S_X) + Tr(S_Y) - 2 Tr(sqrtm(S_X S_Y)), covariances with N - 1.

    X (N, D) is the evaluated set, Y (M, D) the reference. FID is this in Inception's space;
    here it is in whatever space X and Y are.
    """
    return _run("fd", _arrays(X, None, Y)).scalars["fd"]


def kid(X: Any, Y: Any, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> MeanStd:
    """Kernel inception distance as torch-fidelity (REFERENCE.md "KID"): unbiased MMD^2 with
    k(x, y) = (x.y / d + 1)^3 over `subsets` random subsets of `subset_size` rows of each
    set (capped at the smaller set); mean and std (ddof 0) over subsets.

    X is the evaluated set, Y the reference; `n` of the result is the number of subsets.
    """
    result = _run("kid", _arrays(X, None, Y), subsets=subsets, subset_size=subset_size, seed=seed)
    return _mean_std(result, "n_subsets")


def prdc(X: Any, Y: Any, *, k: int = 5) -> dict[str, float]:
    """Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al.
    2020) of X (the evaluated, "fake" set) against Y (the reference, "real" set) with
    k-nearest-neighbour balls, as the authors' ``prdc`` package. Returns the four numbers.
    """
    result = _run("prdc", _arrays(X, None, Y), k=k)
    return {key: result.scalars[key] for key in ("precision", "recall", "density", "coverage")}


# --------------------------------------------------------------------------- verification


def verification(E1: Any, E2: Any, same: Any, folds: int = 10) -> VerificationResult:
    """Face verification of pairs (E1[i], E2[i]) as insightface's eval/verification.py
    (REFERENCE.md "Verification protocol"), the protocol of ``fsbench verify``.

    Rows are L2-normalised; distance = squared L2 (0..4); 10 unshuffled folds; per fold the
    threshold in arange(0, 4, 0.01) best on the other folds is applied to it. Returns a
    `fsbench.verification.VerificationResult`: `accuracy` and `std` over folds, `thresholds`
    per fold, `tar_at_far` (VAL at FAR = 1e-3), `auc`, ... Flip TTA is the embedder's
    business: pass embed(x) + embed(mirror x) to get it.
    """
    from fsbench.verification import evaluate_pairs

    a, b, s = np.asarray(E1), np.asarray(E2), np.asarray(same)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"E1 {a.shape} and E2 {b.shape} must both be (N, D): row i of each is pair i")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("E1 or E2 holds NaN or inf values")
    if s.shape != (len(a),):
        raise ValueError(f"same has shape {s.shape}, expected ({len(a)},): one flag per pair")
    if s.dtype != bool and not np.isin(s, (0, 1)).all():
        raise ValueError("same must hold booleans (or 0/1): True where the pair is one identity")
    return evaluate_pairs(a, b, s.astype(bool), n_folds=folds)


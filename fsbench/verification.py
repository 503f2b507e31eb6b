"""insightface's face-verification protocol, computed from sorted distances, and
`verify_embedder`, which embeds a pair set's images and runs it.

A core module: the verification metric, FR training's benchmarks and the judge all score
with it, and plugins never import each other.

The reference (insightface ``recognition/arcface_torch/eval/verification.py``) loops over
every threshold and recounts every pair, per fold: 400 thresholds for accuracy and 4,000 for
VAL@FAR. Here each fold's genuine and impostor distances are sorted once and
`np.searchsorted(..., side="left")` gives, for all thresholds at once, how many distances
are strictly below each one -- exactly the counts of ``np.less(dist, threshold)``. The
training-fold counts are the totals minus the test fold's, so accuracies, the chosen
thresholds and VAL/FAR are the reference's to the bit (the tests compare against a plain
loop).

Choices where the reference leaves a gap, stated so results are comparable:

- folds are sklearn ``KFold(n_splits, shuffle=False)``: when the pair count does not divide,
  the first ``n % n_splits`` folds hold one pair more (the reference does the same);
  ``n_folds=1`` trains and tests on all pairs, as insightface's ``LFold`` does;
- VAL@FAR interpolates ``threshold(FAR)`` with ``interp1d(kind="slinear")`` as the reference
  does, but first collapses repeated FAR values to their first (smallest) threshold: scipy
  >= 1.9 refuses repeated x values, which breaks insightface's own call (its issues #2152,
  #2290, #2438);
- a fold whose training part has no genuine or no impostor pair gives NaN for VAL/FAR (the
  reference divides by zero);
- TAR@FAR=1e-4 is reported only when every training split holds at least 10,000 impostor
  pairs (fewer cannot resolve that FAR); otherwise NaN with a note. ROC AUC is sklearn's
  ``roc_auc_score`` on negated distances over all pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fsbench.errors import DatasetError, MetricError

if TYPE_CHECKING:  # pragma: no cover
    from fsbench.api import Embedder
    from fsbench.data.pairs import PairSet

__all__ = [
    "ACC_THRESHOLDS",
    "VAL_THRESHOLDS",
    "VerificationResult",
    "embed_pairset",
    "evaluate_distances",
    "evaluate_pairs",
    "fold_ids",
    "pair_distances",
    "prepare_image",
    "verify_embedder",
]

ACC_THRESHOLDS = np.arange(0, 4, 0.01)  # (400,) the reference's accuracy grid
VAL_THRESHOLDS = np.arange(0, 4, 0.001)  # (4000,) the reference's VAL@FAR grid


@dataclass
class VerificationResult:
    """Everything the protocol measures on one pair set.

    `accuracy`/`std` are the headline numbers (mean and ddof-0 std over folds);
    `thresholds` holds the squared-distance threshold picked on each fold's training part.
    """

    accuracy: float
    std: float
    accuracies: np.ndarray  # (folds,) test-fold accuracy
    thresholds: np.ndarray  # (folds,) best training threshold per fold
    tar_at_far: float  # VAL at FAR = far_target, mean over folds
    tar_std: float
    far: float  # FAR measured on the test folds at the interpolated thresholds, mean
    far_target: float
    tar_at_far_1e4: float  # NaN when the pair count cannot resolve FAR = 1e-4
    auc: float
    pairs: int
    folds: int
    fold_sizes: np.ndarray  # (folds,) pairs per test fold
    tpr: np.ndarray  # (400,) mean over folds of the test-fold TPR per threshold (ROC curve)
    fpr: np.ndarray  # (400,)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; NaN becomes None."""

        def num(x: float) -> float | None:
            return None if not np.isfinite(x) else float(x)

        return {
            "accuracy": num(self.accuracy),
            "std": num(self.std),
            "tar_at_far": num(self.tar_at_far),
            "tar_std": num(self.tar_std),
            "far": num(self.far),
            "far_target": self.far_target,
            "tar_at_far_1e-4": num(self.tar_at_far_1e4),
            "auc": num(self.auc),
            "thresholds": [float(t) for t in self.thresholds],
            "accuracies": [float(a) for a in self.accuracies],
            "pairs": int(self.pairs),
            "folds": int(self.folds),
            "fold_sizes": [int(s) for s in self.fold_sizes],
            "notes": list(self.notes),
        }


def pair_distances(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """Squared L2 distance (0..4) of the L2-normalised rows, computed as the reference does."""
    from sklearn.preprocessing import normalize

    emb_a = np.asarray(emb_a)
    emb_b = np.asarray(emb_b)
    if emb_a.ndim != 2 or emb_a.shape != emb_b.shape:
        raise MetricError(f"verification: embeddings of shape {emb_a.shape} and {emb_b.shape} do not pair up")
    diff = np.subtract(normalize(emb_a), normalize(emb_b))
    return np.sum(np.square(diff), 1)  # (N,)


def fold_ids(n_pairs: int, n_folds: int) -> np.ndarray:
    """Test-fold id per pair from an unshuffled sklearn KFold (first folds one larger)."""
    from sklearn.model_selection import KFold

    ids = np.zeros(n_pairs, dtype=np.int64)
    if n_folds == 1:
        return ids
    for k, (_, test) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(np.arange(n_pairs))):
        ids[test] = k
    return ids


def _below_counts(dist: np.ndarray, folds: np.ndarray, n_folds: int, issame: np.ndarray,
                  thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per fold and threshold: genuine and impostor pairs with dist < threshold.

    Returns two (folds, T) int64 arrays; `searchsorted(side="left")` on sorted distances
    counts exactly the entries strictly below each threshold.
    """
    same_below = np.empty((n_folds, len(thresholds)), dtype=np.int64)
    diff_below = np.empty_like(same_below)
    for k in range(n_folds):
        in_fold = folds == k
        same_below[k] = np.searchsorted(np.sort(dist[in_fold & issame]), thresholds, side="left")
        diff_below[k] = np.searchsorted(np.sort(dist[in_fold & ~issame]), thresholds, side="left")
    return same_below, diff_below


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den in float64, NaN where den == 0 (the reference raises there)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _interp_threshold(far_train: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """threshold(FAR = target) as the reference's interp1d 'slinear', repeated FARs collapsed."""
    from scipy.interpolate import interp1d

    if not np.isfinite(far_train).all() or far_train.max() < target:
        return 0.0
    uniq, first = np.unique(far_train, return_index=True)  # FAR rises with the threshold
    if len(uniq) == 1:  # every FAR equals the target: the first threshold reaches it
        return float(thresholds[first[0]])
    return float(interp1d(uniq, thresholds[first], kind="slinear")(target))


def _val_far(dist: np.ndarray, folds: np.ndarray, n_folds: int, issame: np.ndarray,
             far_target: float, shared_train: bool) -> tuple[np.ndarray, np.ndarray]:
    """(folds,) VAL and FAR on each test fold at the threshold interpolated on its training part."""
    same_below, diff_below = _below_counts(dist, folds, n_folds, issame, VAL_THRESHOLDS)
    n_same = np.bincount(folds[issame], minlength=n_folds)
    n_diff = np.bincount(folds[~issame], minlength=n_folds)
    val = np.full(n_folds, np.nan)
    far = np.full(n_folds, np.nan)
    for k in range(n_folds):
        if shared_train:
            fp_train, nd_train, ns_train = diff_below[k], n_diff[k], n_same[k]
        else:
            fp_train = diff_below.sum(0) - diff_below[k]
            nd_train = n_diff.sum() - n_diff[k]
            ns_train = n_same.sum() - n_same[k]
        if nd_train == 0 or ns_train == 0:
            continue
        far_train = fp_train / float(nd_train)  # (4000,)
        threshold = _interp_threshold(far_train, VAL_THRESHOLDS, far_target)
        test = folds == k
        predict = np.less(dist[test], threshold)
        actual = issame[test]
        if actual.sum() and (~actual).sum():
            val[k] = np.logical_and(predict, actual).sum() / float(actual.sum())
            far[k] = np.logical_and(predict, ~actual).sum() / float((~actual).sum())
    return val, far


def evaluate_distances(dist: np.ndarray, issame, n_folds: int = 10, far_target: float = 1e-3,
                       folds: np.ndarray | None = None) -> VerificationResult:
    """The protocol on precomputed squared distances (N,) and is-same flags (N,).

    `folds` (N,) ints overrides the KFold split with given test folds (a pairs.csv ``fold``
    column); fold ids are renumbered 0..K-1 in sorted order.
    """
    dist = np.asarray(dist, dtype=np.float64)  # exact widening: compares as np.less would
    issame = np.asarray(issame, dtype=bool)
    n = len(dist)
    notes: list[str] = []
    if issame.shape != dist.shape or dist.ndim != 1:
        raise MetricError(f"verification: {len(issame)} is-same flags for {n} pairs")
    if folds is not None:
        _, folds = np.unique(np.asarray(folds), return_inverse=True)
        n_folds = int(folds.max()) + 1 if n else 0
        if n_folds < 2:
            raise MetricError("verification: the pairs' fold column names fewer than 2 folds")
    else:
        if n_folds < 1:
            raise MetricError(f"verification: --folds must be at least 1, got {n_folds}")
        if n < max(n_folds, 2):
            raise MetricError(f"verification: {n} pairs cannot be split into {n_folds} folds")
        folds = fold_ids(n, n_folds)
        if n % n_folds:
            notes.append(
                f"{n} pairs do not divide into {n_folds} folds: as in the reference (unshuffled "
                f"KFold) the first {n % n_folds} folds hold {n // n_folds + 1} pairs, the rest {n // n_folds}"
            )
    shared_train = n_folds == 1  # insightface's LFold: one fold trains and tests on everything
    fold_sizes = np.bincount(folds, minlength=n_folds)

    # Accuracy over the 400-threshold grid, all folds at once.
    same_below, diff_below = _below_counts(dist, folds, n_folds, issame, ACC_THRESHOLDS)  # (K, 400)
    n_same = np.bincount(folds[issame], minlength=n_folds)  # (K,)
    n_diff = np.bincount(folds[~issame], minlength=n_folds)
    if shared_train:
        tp_train, fp_train = same_below, diff_below
        nd_train, n_train = n_diff, fold_sizes
    else:
        tp_train = same_below.sum(0) - same_below  # (K, 400)
        fp_train = diff_below.sum(0) - diff_below
        nd_train, n_train = n_diff.sum() - n_diff, n - fold_sizes
    acc_train = (tp_train + (nd_train[:, None] - fp_train)) / n_train[:, None].astype(np.float64)
    best = np.argmax(acc_train, axis=1)  # (K,) first maximum, as the reference
    rows = np.arange(n_folds)
    tp_test, fp_test = same_below[rows, best], diff_below[rows, best]
    accuracies = (tp_test + (n_diff - fp_test)) / fold_sizes.astype(np.float64)
    tpr = np.where(n_same[:, None] > 0, _safe_div(same_below, n_same[:, None]), 0.0).mean(0)
    fpr = np.where(n_diff[:, None] > 0, _safe_div(diff_below, n_diff[:, None]), 0.0).mean(0)

    val, far = _val_far(dist, folds, n_folds, issame, far_target, shared_train)
    if np.isnan(val).any():
        notes.append("some folds have no genuine or no impostor pair: their VAL/FAR are undefined (NaN)")
    min_train_diff = int(n_diff.min() if shared_train else (n_diff.sum() - n_diff).min())
    if min_train_diff < 1.0 / far_target:
        notes.append(f"TAR@FAR={far_target:g} is interpolated below the first false accept (training splits "
                     f"hold {min_train_diff} impostor pairs, fewer than {1.0 / far_target:.0f}): read it with care")

    # TAR@FAR=1e-4 needs >= 10,000 impostors in every training split to mean anything.
    if min_train_diff >= 10_000:
        val4, _ = _val_far(dist, folds, n_folds, issame, 1e-4, shared_train)
        tar4 = float(np.mean(val4))
    else:
        tar4 = float("nan")
        notes.append(f"TAR@FAR=1e-4 not reported: training splits hold {min_train_diff} impostor "
                     "pairs, fewer than the 10,000 needed to resolve that FAR")

    if issame.all() or not issame.any():
        auc = float("nan")
        notes.append("ROC AUC undefined: the pairs are all genuine or all impostor")
    else:
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(issame, -dist))

    return VerificationResult(
        accuracy=float(np.mean(accuracies)),
        std=float(np.std(accuracies)),
        accuracies=accuracies,
        thresholds=ACC_THRESHOLDS[best],
        tar_at_far=float(np.mean(val)),
        tar_std=float(np.std(val)),
        far=float(np.mean(far)),
        far_target=far_target,
        tar_at_far_1e4=tar4,
        auc=auc,
        pairs=n,
        folds=n_folds,
        fold_sizes=fold_sizes,
        tpr=tpr,
        fpr=fpr,
        notes=notes,
    )


def evaluate_pairs(emb_a: np.ndarray, emb_b: np.ndarray, issame, n_folds: int = 10,
                   far_target: float = 1e-3, folds: np.ndarray | None = None) -> VerificationResult:
    """The protocol on embeddings of the two sides of each pair, (N, D) each, unnormalised OK."""
    return evaluate_distances(pair_distances(emb_a, emb_b), issame, n_folds=n_folds,
                              far_target=far_target, folds=folds)


# --------------------------------------------------------------------------- embedders on pair sets

EVAL_SIDE = 112  # insightface's evaluation image size


MAX_ASPECT = 16  # a face image is never 16 times wider than tall (or taller than wide)


def prepare_image(image: np.ndarray, side: int = EVAL_SIDE, source: str = "image") -> np.ndarray:
    """Short side to `side` with area interpolation, only when the width differs (as insightface).

    A 1 x 16,000 image would become 112 x 1,792,000 pixels (600 MB, then the embedder's
    float copies): beyond `MAX_ASPECT` the image is refused, naming `source`."""
    h, w = image.shape[:2]
    if w == side:
        return image
    if max(h, w) > MAX_ASPECT * max(min(h, w), 1):
        raise DatasetError(source, f"image is {w}x{h} pixels, more than {MAX_ASPECT} times longer one way "
                                   f"than the other: not a face image (resizing its short side to {side} "
                                   "would take gigabytes)")
    import cv2

    # MXNet's resize_short: the short side becomes `side`, the other scales by integer division
    new_h, new_w = (side * h // w, side) if h > w else (side, side * w // h)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def _name(embedder: object) -> str:
    return getattr(embedder, "name", type(embedder).__name__)


def _embed_group(embedder: Embedder, images: np.ndarray, flip: bool) -> tuple[np.ndarray, int]:
    """(n, H, W, 3) one-size uint8 -> ((n, D) float32 summed over flips, failures)."""
    n = len(images)
    batch = np.concatenate([images, images[:, :, ::-1]]) if flip else images  # (2n or n, H, W, 3)
    out = np.asarray(embedder.embed(np.ascontiguousarray(batch)), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != len(batch):
        raise MetricError(f"embedder {_name(embedder)!r} returned shape {out.shape} for {len(batch)} images")
    failures = len(getattr(embedder, "failures", dict)())
    if flip:
        out = out[:n] + out[n:]
    return out, failures


def embed_pairset(embedder: Embedder, pairset: PairSet, flip: bool = True,
                  batch_size: int | None = None) -> tuple[np.ndarray, int]:
    """Embeddings (M, D) float32, L2-normalised, of the pair set's M distinct images, and the
    number of embedder calls' rows that held no real embedding (say, no face found)."""
    from sklearn.preprocessing import normalize

    from fsbench import ui

    batch_size = int(batch_size or getattr(embedder, "batch_size", 64))
    m = len(pairset.images)
    vectors: np.ndarray | None = None
    failures = 0
    with ui.progress() as bar:
        task = bar.add_task(f"verify {pairset.name} ({_name(embedder)})", total=m, rate="", unit="images")
        for start in range(0, m, batch_size):
            idx = np.arange(start, min(start + batch_size, m))
            images = [prepare_image(pairset.load(int(i)), source=f"{pairset.source}[image {int(i)}]") for i in idx]
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for j, im in enumerate(images):
                by_shape.setdefault(im.shape, []).append(j)
            for rows in by_shape.values():  # embedders take one size per call
                out, bad = _embed_group(embedder, np.stack([images[j] for j in rows]), flip)
                if vectors is None:
                    vectors = np.zeros((m, out.shape[1]), dtype=np.float32)
                vectors[idx[rows]] = out
                failures += bad
            bar.update(task, advance=len(idx))
    assert vectors is not None
    return normalize(vectors).astype(np.float32), failures


def verify_embedder(embedder: Embedder, pairset: PairSet, flip: bool = True, n_folds: int = 10,
                    batch_size: int | None = None, far_target: float = 1e-3) -> VerificationResult:
    """Embed a pair set's images with `embedder` and run the protocol on it.

    The one entry point for Python callers (FR training evaluates each trained model with
    it). `embedder` is an `Embedder` or anything with ``embed(uint8 NHWC) -> (N, D)``
    (``name``, ``batch_size`` and ``failures()`` are used when present). `pairset` comes
    from `fsbench.data.pairs.open_pairs`. Raises MetricError when the pairs cannot be split
    into `n_folds` folds.
    """
    vectors, failures = embed_pairset(embedder, pairset, flip=flip, batch_size=batch_size)
    result = evaluate_pairs(vectors[pairset.index_a], vectors[pairset.index_b], pairset.issame,
                            n_folds=n_folds, far_target=far_target, folds=pairset.folds)
    if pairset.folds is not None:
        result.notes.append(f"{pairset.source}: test folds taken from its 'fold' column ({result.folds} folds)")
    if failures:
        result.notes.append(f"{failures} embedder rows held no real embedding (e.g. no face found); "
                            "they were scored as the embedder returned them")
    result.notes.append("flip TTA: embed(x) + embed(mirror x)" if flip else "no flip TTA")
    return result

"""Metrics on embeddings computed elsewhere: arrays, or an ``.npz`` file, instead of images.

``fsbench evaluate --embeddings file.npz``, ``fsbench.evaluate(embeddings=...)`` and every
function of `fsbench.metrics` run the registered metric plugins unchanged on such vectors:
the arrays stand in for a dataset (`ArraySet`), a context (`PrecomputedContext`, an
`EvalContext`) hands them to the metrics as if an embedder had just computed them, so no
metric has a second implementation for arrays.

The ``.npz`` layout (``np.savez``; read with ``allow_pickle=False``, so object arrays are refused):

- ``embeddings`` (N, D) float: one row per image;
- ``labels`` (N,) int or str: the identity of each row;
- optional ``reference_embeddings`` (M, D) and ``reference_labels`` (M,): the real set, for
  ``iou``, ``leakage``, ``fd``, ``kid``, ``prdc``;
- optional ``serfiq`` (N,) float: each row's SER-FIQ score, for ``div``.

Identity metrics L2-normalise the rows first (REFERENCE.md: "Embeddings f(x) are
L2-normalised before anything below"); distribution metrics (fd, kid, prdc) take them as
stored. Every number is recorded in the space ``embeddings:<sha256 of the file, 12 hex>``
(of the arrays' bytes when arrays are passed), so it still names what produced it.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fsbench.api import Embedder
from fsbench.data.dataset import Item
from fsbench.data.loader import Batch
from fsbench.errors import DatasetError, MetricError, UsageError
from fsbench.evaluation import EvalContext

__all__ = ["ArraySet", "Precomputed", "PrecomputedContext", "PrecomputedEmbedder", "from_arrays", "load_npz"]

REQUIRED = ("embeddings", "labels")
OPTIONAL = ("reference_embeddings", "reference_labels", "serfiq")
RAW = "embeddings:raw"  # the context's `features` spec: fd/kid/prdc get the vectors as stored


class _Rows(NamedTuple):
    """What an `ArraySet` batch carries in place of pixels: which rows of which set."""

    owner: ArraySet
    rows: np.ndarray  # (B,) int64

    def __len__(self) -> int:
        return len(self.rows)


class _Items:
    """`FaceDataset.items` for arrays, made on demand (the context names a failed row by it)."""

    def __init__(self, owner: ArraySet) -> None:
        self.owner = owner

    def __len__(self) -> int:
        return len(self.owner.labels)

    def __getitem__(self, i: int) -> Item:
        label = int(self.owner.labels[i])
        return Item(f"row {int(i)}", self.owner.identities[label], label)


@dataclass
class ArraySet:
    """One side of an evaluation (the dataset or the reference) as arrays: what metrics read
    of a `FaceDataset` (labels, identities, counts, batches, fingerprint), without images."""

    root: Path  # the .npz file, or "<arrays>": what the results name as the dataset
    vectors: np.ndarray  # (N, D) as given
    labels: np.ndarray  # (N,) int64 in [0, len(identities))
    identities: list[str]
    fingerprint_: str
    serfiq: np.ndarray | None = None  # (N,) float64
    info: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    manifest: Any = None
    skip_bad: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def items(self) -> _Items:
        return _Items(self)

    @property
    def num_identities(self) -> int:
        return len(self.identities)

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_identities)

    def fingerprint(self) -> str:
        return self.fingerprint_

    def batches(self, batch_size: int = 64, workers: int | None = None, indices=None) -> Iterator[Batch]:
        order = np.arange(len(self), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield Batch(_Rows(self, rows), self.labels[rows], rows)  # type: ignore[arg-type]


class PrecomputedEmbedder(Embedder):
    """Looks rows up instead of running a network. `normalized=True` (identity metrics)
    returns unit rows, False (distribution metrics) the vectors as stored."""

    name = "embeddings"
    batch_size = 1 << 16

    def __init__(self, space: str, dim: int, normalized: bool) -> None:
        super().__init__(space.partition(":")[2] or None)
        self.space, self.dim, self.normalized = space, dim, normalized
        self._failed: dict[int, str] = {}

    def cache_key(self) -> str:
        return self.space

    def weights_id(self) -> str:
        return self.space.partition(":")[2] or "none"

    def failures(self) -> dict[int, str]:
        return dict(self._failed)

    def embed(self, images: _Rows) -> np.ndarray:  # type: ignore[override]
        out = np.asarray(images.owner.vectors[images.rows], dtype=np.float64)
        self._failed = {}
        if self.normalized:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            zero = np.flatnonzero(norms[:, 0] == 0)
            self._failed = {int(k): "zero vector: no direction to L2-normalise" for k in zero}
            with np.errstate(invalid="ignore", divide="ignore"):
                out = out / norms
        return out.astype(np.float32)

    def serfiq(self, images: _Rows, m: int = 100, p: float = 0.5, seed: int = 0, ids=None) -> np.ndarray:
        """The stored SER-FIQ scores of the rows (`m`, `p`, `seed` were the producer's)."""
        if images.owner.serfiq is None:
            raise MetricError("div needs each image's SER-FIQ score, which these embeddings lack: add a 'serfiq' "
                              "(N,) array to the .npz (or pass scores to fsbench.metrics.div)")
        return images.owner.serfiq[images.rows]


class PrecomputedContext(EvalContext):
    """An `EvalContext` whose embedder and feature space are the given vectors."""

    def __init__(self, dataset: ArraySet, reference: ArraySet | None, space: str, *,
                 out_dir: Path | None = None, seed: int = 0, registry=None) -> None:
        dim = dataset.vectors.shape[1]
        self.face = PrecomputedEmbedder(space, dim, normalized=True)
        self.raw = PrecomputedEmbedder(space, dim, normalized=False)
        super().__init__(dataset, reference=reference, embedder=self.face, features=RAW,  # type: ignore[arg-type]
                         out_dir=out_dir, use_cache=False, seed=seed, registry=registry)
        self.space = space

    def embedder(self, spec: str | None = None) -> Embedder:
        if spec is None:
            return self.face
        if spec == RAW:
            return self.raw
        raise UsageError(f"precomputed embeddings ({self.space}) are the only feature space here: "
                         f"a metric asked for {spec!r} (drop its ':{spec}')")

    def require(self, what: str, metric: str) -> Any:
        if what == "reference" and self.reference is None:
            raise UsageError(f"metric {metric!r} needs reference embeddings: add 'reference_embeddings' and "
                             "'reference_labels' arrays to the .npz (or pass reference arrays)")
        if what == "benchmarks":
            raise UsageError(f"metric {metric!r} needs benchmark images, which precomputed embeddings do not have "
                             "(score pair embeddings with fsbench.metrics.verification)")
        return super().require(what, metric)


@dataclass
class Precomputed:
    """Validated arrays: the dataset side, the optional reference side, and their space."""

    dataset: ArraySet
    reference: ArraySet | None
    space: str
    source: str  # the .npz path, or "<arrays>"

    @property
    def name(self) -> str:
        return Path(self.source).stem if self.source != "<arrays>" else "embeddings"

    def context(self, *, out_dir: Path | None = None, seed: int = 0, registry=None) -> PrecomputedContext:
        return PrecomputedContext(self.dataset, self.reference, self.space, out_dir=out_dir, seed=seed,
                                  registry=registry)

    def describe(self) -> dict[str, Any]:
        ref = self.reference
        return {"source": self.source, "space": self.space, "n": len(self.dataset), "dim": int(self.dataset.vectors.shape[1]),
                "identities": self.dataset.num_identities, "reference_n": len(ref) if ref is not None else None,
                "serfiq": self.dataset.serfiq is not None}


# --------------------------------------------------------------------------- validation


def _labels(values: Any, n: int, what: str) -> tuple[np.ndarray, list[str]]:
    """(N,) ints or names -> (int64 codes in sorted-name order, the names); refuses floats."""
    arr = np.asarray(values)
    if arr.dtype == object:  # a list of str from Python (never from an .npz: no pickles there)
        kinds = {type(v) for v in arr.ravel().tolist()}
        if kinds <= {str}:
            arr = arr.astype(str)
        elif all(issubclass(k, (int, np.integer)) and not issubclass(k, bool) for k in kinds):
            arr = arr.astype(np.int64)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{what} has shape {arr.shape}, expected ({n},): one label per embedding row")
    if arr.dtype.kind == "S":
        arr = arr.astype(str)
    if arr.dtype.kind not in "iuU":
        raise ValueError(f"{what} holds {arr.dtype} values, expected integer labels or identity names")
    names, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), [str(v) for v in names.tolist()]


def _vectors(values: Any, what: str, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{what} has shape {arr.shape}, expected (N, D) with N, D >= 1")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{what} holds {arr.dtype} values, expected real numbers")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{what} has {arr.shape[1]} dimensions but the dataset's embeddings have {dim}")
    bad = ~np.isfinite(arr).all(axis=1) if arr.dtype.kind == "f" else np.zeros(len(arr), bool)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} of {len(arr)} rows hold NaN or inf (first: row {int(np.argmax(bad))})")
    return arr


def _content_sha(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}\t{a.dtype.str}\t{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def from_arrays(arrays: Mapping[str, Any], *, source: str = "<arrays>", sha256: str | None = None,
                names: Mapping[str, str] | None = None) -> Precomputed:
    """Check the .npz-layout arrays (module docstring) and wrap them; ValueError names the bad one
    (by `names`, e.g. {"embeddings": "E"}, when the caller calls them otherwise)."""
    names = {k: (names or {}).get(k, k) for k in REQUIRED + OPTIONAL}
    unknown = sorted(set(arrays) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ValueError(f"unknown array {unknown[0]!r} (expected {', '.join(REQUIRED + OPTIONAL)})")
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"no {names[missing[0]]!r} array (found: {', '.join(sorted(arrays)) or 'none'})")
    if ("reference_embeddings" in arrays) != ("reference_labels" in arrays):
        raise ValueError(f"{names['reference_embeddings']!r} and {names['reference_labels']!r} come together: "
                         "give both or neither")
    vectors = _vectors(arrays["embeddings"], names["embeddings"])
    labels, identities = _labels(arrays["labels"], len(vectors), names["labels"])
    serfiq = None
    if "serfiq" in arrays:
        serfiq = np.asarray(arrays["serfiq"])
        if serfiq.shape != (len(vectors),) or serfiq.dtype.kind not in "fiu" or not np.isfinite(serfiq).all():
            raise ValueError(f"{names['serfiq']} has shape {serfiq.shape} and dtype {serfiq.dtype}, expected ({len(vectors)},) "
                             "finite numbers: one SER-FIQ score per embedding row")
        serfiq = serfiq.astype(np.float64)
    sha = sha256 or _content_sha({k: np.asarray(v) for k, v in arrays.items()})
    space = f"embeddings:{sha[:12]}"
    info = {"embeddings": source, "sha256": sha}
    dataset = ArraySet(Path(source), vectors, labels, identities, hashlib.sha256(f"{sha}\tdataset".encode()).hexdigest()[:16],
                       serfiq=serfiq, info=info)
    reference = None
    if "reference_embeddings" in arrays:
        ref_vectors = _vectors(arrays["reference_embeddings"], names["reference_embeddings"], vectors.shape[1])
        ref_labels, ref_ids = _labels(arrays["reference_labels"], len(ref_vectors), names["reference_labels"])
        reference = ArraySet(Path(f"{source}#reference"), ref_vectors, ref_labels, ref_ids,
                             hashlib.sha256(f"{sha}\treference".encode()).hexdigest()[:16], info=info)
    return Precomputed(dataset, reference, space, source)


def load_npz(path: str | Path) -> Precomputed:
    """Read and check an embeddings .npz; any problem is one DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such embeddings file (an .npz with 'embeddings' and 'labels')")
    with open(path, "rb") as fh:
        sha = hashlib.file_digest(fh, "sha256").hexdigest()
    if not zipfile.is_zipfile(path):  # np.load would try it as a .npy or a pickle
        raise DatasetError(path, "not an .npz file (save with np.savez(path, embeddings=E, labels=y))")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DatasetError(path, "holds a pickled object array; fsbench never unpickles: save plain numeric "
                                     "or string arrays (e.g. labels as str or int)") from None
        raise DatasetError(path, f"not a readable .npz file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, MemoryError) as exc:
        raise DatasetError(path, f"not a readable .npz file ({exc.__class__.__name__})") from None
    try:
        return from_arrays(arrays, source=str(path), sha256=sha)
    except ValueError as exc:
        raise DatasetError(path, str(exc)) from None

"""Features and feature statistics for the distribution metrics, with their provenance.

An FID is only a number together with its feature space, so every statistics object and
every cached or saved file carries the space key (embedder name, option, weights hash,
resize mode: `Embedder.cache_key()`), and loading one for another space is an error.
Statistics are streamed (`fsbench.stats.RunningMoments`): the features of a set are held
only when a metric needs them all (kid, prdc), or, below a small memory budget, kept for
the rest of the run so that fid followed by kid does not run the network twice.
"""

from __future__ import annotations

import os
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsbench import ui
from fsbench.api import Embedder
from fsbench.errors import DatasetError, MetricError, UsageError
from fsbench.stats import RunningMoments

MEMO_BYTES = 256 << 20  # keep a set's features for the run when they fit in this budget
# (fingerprint, space) -> ((N, D) features, images dropped)
_memo: OrderedDict[tuple[str, str], tuple[np.ndarray, int]] = OrderedDict()


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance (N - 1) of a set's features, and the space they live in."""

    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    n: int
    space: str | None  # None only for files written by other tools (pytorch-fid)
    dropped: int = 0  # images that gave no feature vector (no face found...)

    def save(self, path: Path, **extra: str) -> None:
        """pytorch-fid's npz layout (mu, sigma) plus n and space; written atomically."""
        path = Path(path)
        arrays = {"mu": self.mu, "sigma": self.sigma, "n": np.array(self.n, dtype=np.int64)}
        arrays["space"] = np.array(self.space or "")
        arrays.update({k: np.array(v) for k, v in extra.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        with open(tmp, "wb") as f:  # a file handle: np.savez would append ".npz" to a name
            np.savez(f, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> FeatureStats:
        """Read an npz with `mu` and `sigma` (fsbench's or pytorch-fid's)."""
        from fsbench.plugins.metrics._distribution_math import statistics_problem

        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: no such statistics file")
        headers = _npz_headers(path)  # shapes and dtypes as declared, nothing loaded yet
        if "mu" not in headers or "sigma" not in headers:
            raise DatasetError(path, f"has no 'mu' and 'sigma' arrays (found: {', '.join(headers) or 'none'})")
        (mu_shape, mu_dtype), (sigma_shape, sigma_dtype) = headers["mu"], headers["sigma"]
        for name, dtype in (("mu", mu_dtype), ("sigma", sigma_dtype)):
            if dtype.kind not in "fiu":
                raise DatasetError(path, f"{name} holds {dtype} values, expected numbers")
        if len(mu_shape) != 1 or tuple(sigma_shape) != (mu_shape[0], mu_shape[0]):
            raise DatasetError(path, f"mu {tuple(mu_shape)} and sigma {tuple(sigma_shape)} are not a mean (d,) "
                                     "and its covariance (d, d)")
        if not 1 <= mu_shape[0] <= MAX_STATS_DIM:
            raise DatasetError(path, f"declares {mu_shape[0]}-d statistics; fsbench reads 1 to {MAX_STATS_DIM} "
                                     "dimensions (a corrupt or crafted file?)")
        for name in ("n", "space"):
            if name in headers and np.prod(headers[name][0], dtype=np.int64) * headers[name][1].itemsize > 4096:
                raise DatasetError(path, f"'{name}' declares {headers[name][0]} values, expected one")
        try:
            with np.load(path, allow_pickle=False) as z:  # only the arrays used: never a stray large one
                arrays = {k: z[k] for k in ("mu", "sigma", "n", "space") if k in headers}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DatasetError(path, f"not a readable .npz statistics file ({exc.__class__.__name__})") from None
        mu, sigma = arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64)
        problem = statistics_problem(mu, sigma)
        if problem:
            raise DatasetError(path, problem)
        space = str(arrays["space"]) if "space" in arrays and str(arrays["space"]) else None
        try:
            n = int(arrays["n"]) if "n" in arrays else -1
        except (TypeError, ValueError, OverflowError):
            raise DatasetError(path, f"'n' is {arrays['n']!r}, expected a sample count") from None
        return cls(mu, sigma, n, space)

    @classmethod
    def from_moments(cls, moments: RunningMoments, space: str, dropped: int = 0) -> FeatureStats:
        return cls(moments.mean.copy(), moments.cov, moments.n, space, dropped)


MAX_STATS_DIM = 16_384  # a (d, d) float64 sigma of 2 GiB; feature spaces in use have 128 to 2,048


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape, dtype) of every array in an .npz, from the .npy headers alone."""
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:
                        raise ValueError(f"unknown .npy format version {version}")
                    shape, _, dtype = read(fh)
                out[info.filename[:-4]] = (tuple(int(x) for x in shape), dtype)
            return out
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(path, f"not a readable .npz statistics file ({exc.__class__.__name__}: {exc})") from None


def check_space(found: str | None, wanted: str, source: str) -> None:
    """Refuse statistics from another feature space: their distance means nothing."""
    if found is not None and found != wanted:
        raise UsageError(
            f"{source}: statistics were computed in feature space {found!r}, but this request uses "
            f"{wanted!r}; recompute them (fsbench stats DIR --out FILE --features ...) or ask for their space"
        )


def rank_note(n: int, dim: int, which: str) -> str | None:
    """The warning for a covariance that cannot be full rank, or None."""
    if n > dim:
        return None
    return (
        f"{which}: {n} samples give a covariance of rank at most {n - 1} < {dim} dimensions; a full-rank "
        f"covariance needs at least {dim + 1} samples (the distance is biased and unstable below that)"
    )


def embed_stream(
    batches: Iterable, emb: Embedder, total: int, label: str, keep: bool
) -> tuple[RunningMoments, np.ndarray | None, int]:
    """Run `emb` over image batches, streaming moments; also return the features when `keep`.

    Rows the embedder reports as failed (no face found) or that are not finite are dropped
    and counted, as the evaluation context does for embeddings.
    """
    moments = RunningMoments(emb.dim)
    kept: list[np.ndarray] = []
    dropped = 0
    with ui.progress() as bar:
        task = bar.add_task(f"features {label} ({emb.name})", total=total, rate="", unit="images")
        for batch in batches:
            out = np.asarray(emb.embed(batch.images), dtype=np.float32)  # (B, D)
            if out.shape != (len(batch.images), emb.dim):
                raise MetricError(
                    f"embedder {emb.name!r} returned shape {out.shape} for {len(batch.images)} images"
                )
            good = np.isfinite(out).all(axis=1)
            for k in emb.failures():
                good[k] = False
            dropped += int((~good).sum())
            out = out[good]
            moments.update(out)
            if keep:
                kept.append(out)
            bar.update(task, advance=len(batch.images))
    feats = np.concatenate(kept) if keep and kept else (np.zeros((0, emb.dim), np.float32) if keep else None)
    return moments, feats, dropped


def _remember(fingerprint: str, space: str, feats: np.ndarray, dropped: int) -> None:
    if feats.nbytes > MEMO_BYTES:
        return
    _memo[(fingerprint, space)] = (feats, dropped)
    while len(_memo) > 4:  # dataset + reference, in at most two spaces
        _memo.popitem(last=False)


def _checked(arrays: dict[str, np.ndarray], space: str, what: str) -> dict[str, np.ndarray]:
    found = str(arrays.get("space", ""))
    if found != space:
        raise MetricError(f"cached {what} are in feature space {found!r}, not {space!r}: clear the fsbench cache")
    return arrays


def context_stats(ctx, which: str, emb: Embedder) -> FeatureStats:
    """Mean and covariance of one side of an evaluation, cached per dataset and space."""
    ds = ctx.dataset if which == "dataset" else ctx.reference
    space = emb.cache_key()

    def compute() -> dict[str, np.ndarray]:
        memo = _memo.get((ds.fingerprint(), space))
        if memo is not None:
            feats, dropped = memo
            moments = RunningMoments(emb.dim).update(feats)
        else:
            keep = len(ds) * emb.dim * 4 <= MEMO_BYTES
            moments, feats, dropped = embed_stream(
                ctx.batches(which, batch_size=emb.batch_size), emb, len(ds), ds.root.name, keep
            )
            if feats is not None:
                _remember(ds.fingerprint(), space, feats, dropped)
        if moments.n < 2:
            raise MetricError(f"{ds.root}: {moments.n} usable feature vector(s); statistics need at least 2")
        return {"mu": moments.mean, "sigma": moments.cov, "n": np.array(moments.n),
                "dropped": np.array(dropped), "space": np.array(space)}

    arrays = _checked(ctx.cached(f"diststats-{space}", which, compute), space, "statistics")
    return FeatureStats(arrays["mu"], arrays["sigma"], int(arrays["n"]), space, int(arrays["dropped"]))


def context_features(ctx, which: str, emb: Embedder) -> tuple[np.ndarray, int]:
    """All feature vectors of one side (N, D) float32 and the count of images that gave
    none, cached per dataset and space."""
    ds = ctx.dataset if which == "dataset" else ctx.reference
    space = emb.cache_key()

    def compute() -> dict[str, np.ndarray]:
        memo = _memo.get((ds.fingerprint(), space))
        if memo is not None:
            feats, dropped = memo
        else:
            _, feats, dropped = embed_stream(
                ctx.batches(which, batch_size=emb.batch_size), emb, len(ds), ds.root.name, True
            )
            _remember(ds.fingerprint(), space, feats, dropped)
        return {"features": feats, "dropped": np.array(dropped), "space": np.array(space)}

    arrays = _checked(ctx.cached(f"distfeat-{space}", which, compute), space, "features")
    return arrays["features"], int(arrays["dropped"])


def dataset_stats(root: Path, emb: Embedder, workers: int | None = None) -> FeatureStats:
    """Statistics of a dataset folder outside an evaluation (`fsbench fid`, `fsbench stats`)."""
    from fsbench.data import FaceDataset

    ds = FaceDataset.open(root)
    moments, _, dropped = embed_stream(
        ds.batches(batch_size=emb.batch_size, workers=workers), emb, len(ds), ds.root.name, False
    )
    if moments.n < 2:
        raise DatasetError(root, f"{moments.n} usable feature vector(s); statistics need at least 2")
    return FeatureStats.from_moments(moments, emb.cache_key(), dropped)


def dropped_note(dropped: int, total: int, which: str) -> str | None:
    if not dropped:
        return None
    return f"{which}: {dropped} of {total} images gave no feature vector (e.g. no face found) and are left out"

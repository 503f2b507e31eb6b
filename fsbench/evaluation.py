"""EvalContext: what a metric may ask for, computed once and cached on disk.

Embedding a dataset is the expensive step of every evaluation, and several metrics want the
same embeddings (cst, sep, iou all use the face embedder), so the context computes them once
per run and keeps them on disk keyed by everything that changes them: the dataset
fingerprint (paths, labels and the sha256 of every image's bytes) and the embedder's cache key (name, option,
weights hash). A second `fsbench evaluate` on the same folder does not embed again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fsbench import ui
from fsbench.api import Embedder, Embeddings
from fsbench.data.dataset import Batch, FaceDataset
from fsbench.errors import DatasetError, MetricError, UsageError
from fsbench.registry import Registry, get_registry

CACHE_VERSION = "v1"  # bump when the cached layout or the embedding procedure changes


def default_cache_dir() -> Path:
    return Path(os.environ.get("FSBENCH_CACHE") or Path.home() / ".cache" / "fsbench")


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic: a killed run never leaves a half-written cache entry that a later run trusts.

    The cache is optional: a read-only or full cache folder is a warning, and the
    evaluation goes on with the arrays it has just computed."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        where = os.fsdecode(exc.filename) if exc.filename is not None else str(path.parent)
        ui.warn(f"embedding cache not written: {where}: {exc.strerror or exc} (set --cache-dir or "
                "$FSBENCH_CACHE to a writable folder to keep embeddings between runs)")


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None  # unreadable cache entry: recompute it


class EvalContext:
    def __init__(
        self,
        dataset: FaceDataset,
        *,
        reference: FaceDataset | None = None,
        embedder: str | Embedder | None = None,
        features: str | None = None,
        benchmarks: list[Path] | tuple[Path, ...] = (),
        out_dir: Path | None = None,
        cache_dir: Path | None = None,
        use_cache: bool = True,
        seed: int = 0,
        registry: Registry | None = None,
    ) -> None:
        self.dataset = dataset
        self.reference = reference
        self.features = features
        self.benchmarks = [Path(b) for b in benchmarks]
        self.out_dir = out_dir
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.use_cache = use_cache
        self.seed = seed
        self.registry = registry or get_registry()
        self._embedder_spec = embedder if isinstance(embedder, str) else None
        self._embedders: dict[str | None, Embedder] = {}
        if isinstance(embedder, Embedder):
            self._embedders[None] = embedder
        self._embeddings: dict[tuple[str, str], Embeddings] = {}

    # ------------------------------------------------------------------ inputs

    def require(self, what: str, metric: str) -> Any:
        if what == "reference" and self.reference is None:
            raise UsageError(f"metric {metric!r} needs a reference dataset: pass --reference DIR")
        if what == "benchmarks" and not self.benchmarks:
            raise UsageError(f"metric {metric!r} needs verification benchmarks: pass --bench FILE")
        if what == "embeddings" and self._embedder_spec is None and None not in self._embedders:
            raise UsageError(f"metric {metric!r} needs face embeddings: pass --embedder NAME[:OPTION]")
        return getattr(self, what, None)

    def _which(self, which: str) -> FaceDataset:
        if which == "dataset":
            return self.dataset
        if which == "reference":
            if self.reference is None:
                raise UsageError("this metric needs a reference dataset: pass --reference DIR")
            return self.reference
        raise ValueError(f"which must be 'dataset' or 'reference', not {which!r}")

    def embedder(self, spec: str | None = None) -> Embedder:
        """The embedder for `spec`, or the run's `--embedder` when spec is None (memoised)."""
        if spec not in self._embedders:
            resolved = spec or self._embedder_spec
            if resolved is None:
                raise UsageError("no embedder chosen: pass --embedder NAME[:OPTION]")
            self._embedders[spec] = self.registry.embedder(resolved)
        return self._embedders[spec]

    def batches(self, which: str = "dataset", batch_size: int = 64) -> Iterator[Batch]:
        yield from self._which(which).batches(batch_size=batch_size)

    # ------------------------------------------------------------------ cached computations

    def cached(
        self, key: str, which: str, compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Arrays computed once per (dataset fingerprint, key) and kept on disk."""
        ds = self._which(which)
        path = self.cache_dir / "arrays" / f"{ds.fingerprint()}-{_safe(key)}-{CACHE_VERSION}.npz"
        if self.use_cache and path.exists():
            hit = _load_npz(path)
            if hit is not None:
                return hit
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        if self.use_cache:
            _save_npz(path, arrays)
        return arrays

    def embeddings(self, which: str = "dataset", spec: str | None = None) -> Embeddings:
        ds = self._which(which)
        emb = self.embedder(spec)
        memo = (which, emb.cache_key())
        if memo not in self._embeddings:
            arrays = self.cached(f"emb-{emb.cache_key()}", which, lambda: self._embed(ds, emb))
            failed = tuple(zip(arrays["failed_path"].tolist(), arrays["failed_reason"].tolist()))
            index = arrays["index"].astype(np.int64)
            self._embeddings[memo] = Embeddings(
                vectors=arrays["vectors"].astype(np.float32, copy=False),
                labels=ds.labels[index],
                index=index,
                identities=tuple(ds.identities),
                space=emb.cache_key(),
                failed=failed,
            )
        return self._embeddings[memo]

    def _embed(self, ds: FaceDataset, emb: Embedder) -> dict[str, np.ndarray]:
        vectors, index, failed = [], [], []
        with ui.progress() as bar:
            task = bar.add_task(f"embedding {ds.root.name} ({emb.name})", total=len(ds), rate="", unit="images")
            for batch in ds.batches(batch_size=emb.batch_size):
                out = np.asarray(emb.embed(batch.images), dtype=np.float32)
                if out.shape != (len(batch.images), emb.dim):
                    raise MetricError(
                        f"embedder {emb.name!r} returned shape {out.shape} for {len(batch.images)} images "
                        f"(expected ({len(batch.images)}, {emb.dim}))"
                    )
                bad = dict(emb.failures())
                for k in np.flatnonzero(~np.isfinite(out).all(axis=1)):
                    bad.setdefault(int(k), "embedder returned NaN/inf")
                keep = np.ones(len(out), dtype=bool)
                for k, reason in bad.items():
                    keep[k] = False
                    failed.append((ds.items[batch.index[k]].path, reason))
                vectors.append(out[keep])
                index.append(batch.index[keep])
                bar.update(task, advance=len(batch.index))
        for path, reason in ds.skipped:
            failed.append((path, reason))
        if not vectors or sum(len(v) for v in vectors) == 0:
            raise DatasetError(ds.root, f"embedder {emb.name!r} produced no usable embedding for any image")
        stacked = np.concatenate(vectors)
        if emb.normalized:
            norms = np.linalg.norm(stacked, axis=1)
            if np.abs(norms - 1).max() > 1e-3:
                raise MetricError(f"embedder {emb.name!r} promised unit vectors but returned norms up to {norms.max():.4g}")
        if failed:
            ui.warn(f"{len(failed)} image(s) of {ds.root} have no embedding, e.g. {failed[0][0]}: {failed[0][1]}")
        return {
            "vectors": stacked,
            "index": np.concatenate(index),
            "failed_path": np.array([p for p, _ in failed], dtype=str),
            "failed_reason": np.array([r for _, r in failed], dtype=str),
        }

"""A contract test kit for plugin authors: run these on your generator, metric or embedder.

    from fsbench.testing import check_embedder, check_generator, check_metric

    def test_my_generator(tmp_path):
        check_generator(MyGenerator, data_dir, tmp_path, overrides={"max_steps": 3})

Each check drives the plugin through the same core code the command line uses and raises
AssertionError naming the broken promise; it returns what it measured. fsbench's own
generators (procedural, VIGFace, SegTex) are checked with it too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from fsbench.api import Embedder, Generator, Metric, MetricResult

__all__ = ["check_embedder", "check_generator", "check_metric"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "dataset.json"}


def check_generator(cls: type[Generator], data_dir: str | Path | None, tmp: str | Path, *, preset: str = "tiny",
                    overrides: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                    n_ids: int = 2, per_id: int = 3) -> dict[str, Any]:
    """Declaration, training every stage (resumable), sampling sharded and unsharded.

    Checks: the declaration is valid (presets, stages, schemas); each stage trains to a
    finished checkpoint and a second `train` call is a no-op; two shards write the bytes of
    one unsharded run; the samples open as a dataset of n_ids x per_id with a manifest that
    records row, image index and seed for every image."""
    from fsbench.data import FaceDataset
    from fsbench.runs import Run, train_generator
    from fsbench.sampling import Shard, plan_sampling, sample_dataset

    t0 = time.perf_counter()
    tmp = Path(tmp)
    cls.check_declaration()
    gen = cls()
    run_dir = None
    if gen.needs_training:
        assert data_dir is not None, f"{cls.name}: a trainable generator needs training data for the check"
        data = FaceDataset.open(data_dir)
        run_dir = tmp / "run"
        train_generator(gen, data, run_dir, preset, overrides, show_progress=False)
        run = Run.open(run_dir, gen)
        for stage in gen.stages:
            assert run.finished(stage.name), f"{cls.name}: stage {stage.name!r} did not finish"
        hashes = run.hashes()
        train_generator(gen, data, run_dir, preset, overrides, show_progress=False)
        assert Run.open(run_dir, gen).hashes() == hashes, f"{cls.name}: training a finished run changed it"

    def sample(out: Path, shard: Shard):
        plan = plan_sampling(gen, run_dir, n_ids=n_ids, per_id=per_id, seed=3, preset=preset, overrides=options)
        return sample_dataset(plan.sampler, plan.request, out, shard=shard, info=plan.info, show_progress=False)

    whole = sample(tmp / "whole", Shard())
    assert whole is not None and len(whole) == n_ids * per_id, f"{cls.name}: expected {n_ids * per_id} images"
    assert whole.num_identities == n_ids, f"{cls.name}: expected {n_ids} identities"
    for col in ("row", "image_index", "seed"):
        assert whole.manifest is not None and col in whole.manifest.columns, f"{cls.name}: manifest lacks {col!r}"
    assert sample(tmp / "sharded", Shard(1, 2)) is None, f"{cls.name}: one of two shards completed the dataset"
    assert sample(tmp / "sharded", Shard(0, 2)) is not None
    same = _files(tmp / "whole") == _files(tmp / "sharded")
    assert same, f"{cls.name}: two shards wrote other bytes than one run (draw noise per key, not per batch)"
    return {"stages": [s.name for s in gen.stages], "images": len(whole), "sharded_equals_unsharded": same,
            "seconds": time.perf_counter() - t0}


def check_embedder(cls: type[Embedder], option: str | None = None, n: int = 5, seed: int = 0) -> dict[str, Any]:
    """(N, H, W, 3) uint8 in, (N, dim) float32 out; unit rows when `normalized`; an image's
    vector does not depend on its batch or on the call (same input, same numbers)."""
    emb = cls(option)
    h, w = emb.input_size
    images = np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    out = emb.embed(images)
    assert out.dtype == np.float32 and out.shape == (n, emb.dim), f"{cls.name}: got {out.dtype} {out.shape}"
    assert np.isfinite(out).all(), f"{cls.name}: non-finite embeddings"
    if emb.normalized:
        assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-4), f"{cls.name}: rows are not unit length"
    alone = emb.embed(images[1:2])
    assert np.allclose(alone[0], out[1], atol=1e-4), f"{cls.name}: an image's vector depends on its batch"
    assert np.array_equal(emb.embed(images), out), f"{cls.name}: the same input gave other numbers"
    assert emb.cache_key() and "/" not in emb.cache_key(), f"{cls.name}: cache_key must be a file-name-safe string"
    return {"dim": emb.dim, "input_size": (h, w)}


def check_metric(cls: type[Metric], dataset_dir: str | Path, *, reference_dir: str | Path | None = None,
                 embedder: str = "pixels", options: dict[str, Any] | None = None) -> MetricResult:
    """`compute` on a real dataset returns a MetricResult named after the metric, with float
    scalars including its `primary`, and the same numbers a second time (seeded)."""
    from fsbench.data import FaceDataset
    from fsbench.evaluation import EvalContext

    def run() -> MetricResult:
        ref = FaceDataset.open(reference_dir) if reference_dir else None
        ctx = EvalContext(FaceDataset.open(dataset_dir), reference=ref, embedder=embedder, use_cache=False)
        return cls(**(options or {})).compute(ctx)

    result = run()
    assert isinstance(result, MetricResult) and result.metric == cls.name, f"{cls.name}: wrong result type or name"
    assert cls.primary in result.scalars, f"{cls.name}: primary scalar {cls.primary!r} missing"
    assert all(isinstance(v, float) for v in result.scalars.values())
    again = run().scalars
    assert all(np.isnan(v) and np.isnan(again[k]) or v == again[k] for k, v in result.scalars.items()), \
        f"{cls.name}: two runs gave other numbers"
    return result

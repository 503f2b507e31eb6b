"""EvalContext: embeddings computed once, cached by (fingerprint, embedder), failures reported."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fsbench.api import Embedder
from fsbench.data import FaceDataset
from fsbench.errors import MetricError, UsageError
from fsbench.evaluation import EvalContext
from fsbench.plugins.embedders.pixels import PixelEmbedder


class MeanColour(Embedder):
    """Counts its calls; row k of a batch fails when its image is all zero."""

    name = "meancolour"
    dim = 3
    calls = 0

    def embed(self, images):
        MeanColour.calls += 1
        self._failed = {k: "no face found" for k, im in enumerate(images) if not im.any()}
        v = images.reshape(len(images), -1, 3).mean(axis=1).astype(np.float32) + 1.0
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def failures(self):
        return self._failed


def test_embeddings_are_cached_on_disk_per_fingerprint(folder, tmp_path):
    root = folder(ids=2, per_id=3, size=8)
    MeanColour.calls = 0
    first = EvalContext(FaceDataset.open(root), embedder=MeanColour(), cache_dir=tmp_path / "c").embeddings()
    assert MeanColour.calls == 1 and first.vectors.shape == (6, 3)
    again = EvalContext(FaceDataset.open(root), embedder=MeanColour(), cache_dir=tmp_path / "c").embeddings()
    assert MeanColour.calls == 1  # second run: read from disk
    assert np.array_equal(again.vectors, first.vectors) and again.labels.tolist() == [0, 0, 0, 1, 1, 1]
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(root / "id_001" / "img_09.png")
    changed = EvalContext(FaceDataset.open(root), embedder=MeanColour(), cache_dir=tmp_path / "c").embeddings()
    assert MeanColour.calls == 2 and len(changed) == 7


def test_failed_rows_are_dropped_and_reported(folder, tmp_path):
    root = folder(ids=2, per_id=2, size=8)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "id_000" / "img_01.png")
    emb = EvalContext(FaceDataset.open(root), embedder=MeanColour(), use_cache=False).embeddings()
    assert emb.index.tolist() == [0, 2, 3] and emb.labels.tolist() == [0, 1, 1]
    assert emb.failed == (("id_000/img_01.png", "no face found"),)


def test_nan_embeddings_are_named_not_propagated(folder):
    class Broken(MeanColour):
        name = "broken"

        def embed(self, images):
            out = super().embed(images)
            out[0] = np.nan
            return out

    root = folder(ids=2, per_id=2, size=8)
    emb = EvalContext(FaceDataset.open(root), embedder=Broken(), use_cache=False).embeddings()
    assert len(emb) == 3 and emb.failed == (("id_000/img_00.png", "embedder returned NaN/inf"),)
    assert np.isfinite(emb.vectors).all()


def test_wrong_shape_and_missing_inputs_are_clear(folder):
    class WrongDim(MeanColour):
        name = "wrongdim"
        dim = 4

    ds = FaceDataset.open(folder(ids=2, per_id=2, size=8))
    with pytest.raises(MetricError, match=r"returned shape \(4, 3\) for 4 images \(expected \(4, 4\)\)"):
        EvalContext(ds, embedder=WrongDim(), use_cache=False).embeddings()
    ctx = EvalContext(ds)
    with pytest.raises(UsageError, match="needs a reference dataset: pass --reference DIR"):
        ctx.require("reference", "iou")
    with pytest.raises(UsageError, match="needs face embeddings: pass --embedder"):
        ctx.require("embeddings", "cst")


def test_cached_arrays_are_keyed_by_dataset_and_key(folder, tmp_path):
    ctx = EvalContext(FaceDataset.open(folder(ids=1, per_id=1, size=8)), cache_dir=tmp_path / "c")
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3)}

    assert ctx.cached("k1", "dataset", compute)["x"].tolist() == [0, 1, 2]
    assert ctx.cached("k1", "dataset", compute)["x"].tolist() == [0, 1, 2]
    ctx.cached("k2", "dataset", compute)
    assert len(calls) == 2


def test_pixel_embedder_matches_a_naive_reference():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    got = PixelEmbedder("8").embed(images)
    # naive: average each 2x2 block per channel, centre, normalise
    blocks = images.astype(np.float64).reshape(5, 8, 2, 8, 2, 3).mean(axis=(2, 4)).reshape(5, -1)
    blocks -= blocks.mean(axis=1, keepdims=True)
    want = blocks / np.linalg.norm(blocks, axis=1, keepdims=True)
    assert got.shape == (5, 192) and np.allclose(got, want, atol=1e-3)
    flat = PixelEmbedder("4").embed(np.full((1, 8, 8, 3), 7, np.uint8))
    assert np.isclose(np.linalg.norm(flat), 1.0)
    with pytest.raises(UsageError, match="pixels:abc: the option is the thumbnail side"):
        PixelEmbedder("abc")


def test_summary_metric_counts_by_hand(folder):
    from fsbench.plugins.metrics.summary import Summary

    root = folder(ids=2, per_id=3, size=8)
    (root / "id_001" / "img_00.png").unlink()
    r = Summary().compute(EvalContext(FaceDataset.open(root)))
    # counts [3, 2]: mean 2.5, population std 0.5
    assert r.scalars == {"identities": 2, "images": 5, "mean": 2.5, "std": 0.5, "min": 2, "max": 3}
    assert r.per_item["images"].tolist() == [3, 2]

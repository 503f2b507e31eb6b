"""Identity metrics (cst, sep, div, iou, leakage, uniqueness, consistency).

Each metric is checked three ways: against a deliberately naive loop written here from the
definition in REFERENCE.md, on random data with several seeds; on tiny hand-computed cases
(2D unit vectors at known angles); and once end to end through a real EvalContext.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from fsbench.api import Embeddings
from fsbench.errors import MetricError, UsageError
from fsbench.plugins.metrics import _identity_math as im
from fsbench.plugins.metrics import identity as idm

SEEDS = [0, 1, 2]


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def clustered(seed: int, n_classes: int = 6, d: int = 8, sizes=(1, 5)) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors scattered around random class directions; some classes of size 1."""
    rng = np.random.default_rng(seed)
    dirs = unit_rows(rng, n_classes, d)
    counts = rng.integers(sizes[0], sizes[1] + 1, n_classes)
    labels = np.repeat(np.arange(n_classes), counts)
    v = dirs[labels] + 0.6 * rng.normal(size=(len(labels), d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    perm = rng.permutation(len(labels))
    return v[perm].astype(np.float32), labels[perm].astype(np.int64)


def emb_of(v: np.ndarray, labels: np.ndarray, n_classes: int | None = None, prefix: str = "id") -> Embeddings:
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    return Embeddings(
        vectors=v.astype(np.float32),
        labels=labels.astype(np.int64),
        index=np.arange(len(v)),
        identities=tuple(f"{prefix}{k}" for k in range(n_classes)),
        space="test",
    )


def at(*degrees: float) -> np.ndarray:
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def cosd(x: float) -> float:
    return math.cos(math.radians(x))


# --------------------------------------------------------------------------- naive references


def naive_cos(a, b) -> float:
    return float(sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)))


def naive_centre(rows) -> list[float]:
    s = [sum(col) / len(rows) for col in zip(*rows)]
    n = math.sqrt(sum(x * x for x in s))
    return [x / n for x in s]


def naive_cst(v, labels) -> dict[int, float]:
    out = {}
    for k in sorted(set(labels.tolist())):
        rows = [v[i] for i in range(len(v)) if labels[i] == k]
        if len(rows) < 2:
            continue
        out[k] = sum(naive_cos(a, b) for a in rows for b in rows) / len(rows) ** 2
    return out


def naive_sep(v, labels) -> dict[int, float]:
    classes = sorted(set(labels.tolist()))
    centres = {k: naive_centre([v[i] for i in range(len(v)) if labels[i] == k]) for k in classes}
    out = {}
    for k in classes:
        ratios = []
        for i in range(len(v)):
            if labels[i] != k:
                continue
            ccs = naive_cos(v[i], centres[k])
            nnccs = max(naive_cos(v[i], centres[j]) for j in classes if j != k)
            ratios.append(ccs / nnccs)
        out[k] = sum(ratios) / len(ratios)
    return out


def naive_pairs(v, labels, same: bool) -> list[float]:
    return [
        naive_cos(v[i], v[j])
        for i, j in itertools.combinations(range(len(v)), 2)
        if (labels[i] == labels[j]) == same
    ]


def naive_hist(values, bins: int) -> list[float]:
    h = [0] * bins
    for s in values:
        b = int((min(max(s, -1.0), 1.0) + 1.0) / 2.0 * bins)
        h[min(b, bins - 1)] += 1
    return [x / len(values) for x in h]


def naive_iou(a, b, bins: int) -> float:
    ha, hb = naive_hist(a, bins), naive_hist(b, bins)
    return sum(min(x, y) for x, y in zip(ha, hb)) / sum(max(x, y) for x, y in zip(ha, hb))


# --------------------------------------------------------------------------- CST


@pytest.mark.parametrize("seed", SEEDS)
def test_cst_matches_naive(seed):
    v, labels = clustered(seed)
    cst, counts = im.cst_per_class(v, labels, labels.max() + 1)
    ref = naive_cst(v, labels)
    for k in range(len(counts)):
        if counts[k] < 2:
            assert math.isnan(cst[k])
        else:
            assert cst[k] == pytest.approx(ref[k], abs=1e-6)


def test_cst_hand_computed_two_identities():
    # A at 0 and 20 degrees: CST = (cos0 + cos0 + 2 cos20) / 4 = (1 + cos20) / 2 = 0.969846
    # B at 50 and 90 degrees: CST = (1 + cos40) / 2 = 0.883022
    v = np.concatenate([at(0, 20), at(50, 90)])
    labels = np.array([0, 0, 1, 1])
    res = idm.cst_result(emb_of(v, labels), *im.cst_per_class(v, labels, 2))
    assert res.per_item["cst"].tolist() == pytest.approx([(1 + cosd(20)) / 2, (1 + cosd(40)) / 2], abs=1e-6)
    assert res.scalars["mean"] == pytest.approx(((1 + cosd(20)) / 2 + (1 + cosd(40)) / 2) / 2, abs=1e-6)
    assert res.scalars["std"] == pytest.approx(abs(cosd(20) - cosd(40)) / 4, abs=1e-6)
    assert res.per_item["cst"].iloc[0] == pytest.approx(0.969846, abs=1e-6)


def test_cst_excludes_and_counts_single_image_identities():
    # identity 2 has one image, identity 3 has none (all failed): one excluded, one absent
    v = np.concatenate([at(0, 20), at(50, 90), at(200)])
    labels = np.array([0, 0, 1, 1, 2])
    cst, counts = im.cst_per_class(v, labels, 4)
    res = idm.cst_result(emb_of(v, labels, 4), cst, counts)
    assert res.scalars["n_excluded"] == 1 and res.scalars["n_identities"] == 2
    assert any("1 identities with fewer than 2 images excluded" in n for n in res.notes)
    assert res.per_item["identity"].tolist() == ["id0", "id1", "id2"]
    assert math.isnan(res.per_item["cst"].iloc[2])
    assert res.scalars["mean"] == pytest.approx(((1 + cosd(20)) + (1 + cosd(40))) / 4, abs=1e-6)


# --------------------------------------------------------------------------- SEP


@pytest.mark.parametrize("seed", SEEDS)
def test_sep_matches_naive(seed):
    v, labels = clustered(seed)
    ccs, nnccs, _ = im.sep_per_item(v, labels, labels.max() + 1)
    res = idm.sep_result(emb_of(v, labels), ccs, nnccs, im.class_counts(labels, labels.max() + 1))
    ref = naive_sep(v, labels)
    assert res.per_item["sep"].tolist() == pytest.approx([ref[k] for k in sorted(ref)], rel=1e-4, abs=1e-5)


def test_sep_hand_computed_two_identities():
    # A = {0, 20} deg -> centre 10 deg; B = {50, 90} deg -> centre 70 deg.
    # a@0:  CCS cos10, NNCCS cos70;  a@20: CCS cos10, NNCCS cos50
    # b@50: CCS cos20, NNCCS cos40;  b@90: CCS cos20, NNCCS cos80
    v = np.concatenate([at(0, 20), at(50, 90)])
    labels = np.array([0, 0, 1, 1])
    ccs, nnccs, nearest = im.sep_per_item(v, labels, 2)
    sep_a = (cosd(10) / cosd(70) + cosd(10) / cosd(50)) / 2  # (2.87939 + 1.53209) / 2 = 2.20574
    sep_b = (cosd(20) / cosd(40) + cosd(20) / cosd(80)) / 2  # (1.22668 + 5.41147) / 2 = 3.31908
    res = idm.sep_result(emb_of(v, labels), ccs, nnccs, im.class_counts(labels, 2))
    assert res.per_item["sep"].tolist() == pytest.approx([sep_a, sep_b], rel=1e-5)
    assert sep_a == pytest.approx(2.20574, abs=1e-5) and sep_b == pytest.approx(3.31908, abs=1e-5)
    assert nearest.tolist() == [1, 1, 0, 0]


@pytest.mark.parametrize("seed", SEEDS)
def test_nearest_centre_chunked_equals_unchunked(seed):
    rng = np.random.default_rng(seed)
    n, c, d = 700, 90, 16
    q = unit_rows(rng, n, d)
    centres = unit_rows(rng, c, d)
    own = rng.integers(0, c, n)
    valid = rng.random(c) > 0.1
    full = q @ centres.T
    full[:, ~valid] = -np.inf
    full[np.arange(n), own] = -np.inf
    # 4 KiB blocks force tiling along both rows and centres; the default is one big block
    for block in (4096, 64 * 2**20):
        best, arg = im.nearest_centre(q, centres, own, valid=valid, block_bytes=block)
        np.testing.assert_allclose(best, full.max(axis=1), atol=1e-6)
        np.testing.assert_array_equal(arg, full.argmax(axis=1))


def test_sep_one_identity_is_an_error():
    v, labels = at(0, 10, 20), np.zeros(3, dtype=np.int64)
    with pytest.raises(MetricError, match="SEP needs >= 2 identities"):
        im.sep_per_item(v, labels, 1)
    with pytest.raises(MetricError, match="SEP needs >= 2 identities"):
        idm.Separability().compute(FakeContext(emb_of(v, labels)))


# --------------------------------------------------------------------------- DIV


@pytest.mark.parametrize("seed", SEEDS)
def test_div_is_population_variance_per_class(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 30)
    labels[0] = 5  # a class of one: excluded
    q = rng.random(30)
    res = idm.div_result([f"id{k}" for k in range(6)], q, labels, 6, m=10, p=0.5, space="t")
    for k in range(5):
        vals = [q[i] for i in range(30) if labels[i] == k]
        if len(vals) >= 2:
            mu = sum(vals) / len(vals)
            expected = sum((x - mu) ** 2 for x in vals) / len(vals)
            got = res.per_item.set_index("identity").loc[f"id{k}", "div"]
            assert got == pytest.approx(expected, abs=1e-12)
    assert res.scalars["n_excluded"] == 1


def test_div_hand_computed():
    # scores {0.2, 0.4} -> mean 0.3, variance (0.01 + 0.01) / 2 = 0.01; {0.5, 0.5, 0.8} -> 0.02
    res = idm.div_result(["a", "b"], np.array([0.2, 0.4, 0.5, 0.5, 0.8]), np.array([0, 0, 1, 1, 1]), 2, m=2, p=0.5, space=None)
    assert res.per_item["div"].tolist() == pytest.approx([0.01, 0.02])
    assert res.scalars["mean"] == pytest.approx(0.015)


def test_div_refuses_embedder_without_serfiq():
    class NoDropout:
        name = "dlib"

    ctx = FakeContext(emb_of(at(0, 10), np.array([0, 1])), embedder=NoDropout())
    with pytest.raises(MetricError, match="which embedder 'dlib' cannot do"):
        idm.Diversity().compute(ctx)


# --------------------------------------------------------------------------- IoU


def test_histogram_iou_identical_disjoint_and_hand_case():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, 1000)
    assert im.histogram_iou(a, a.copy())[0] == pytest.approx(1.0)
    assert im.histogram_iou(np.full(10, -0.5), np.full(10, 0.5))[0] == 0.0
    # 2 bins: a -> [0.5, 0.5], b -> [0, 1]: sum(min) = 0.5, sum(max) = 1.5 -> 1/3
    assert im.histogram_iou(np.array([-0.5, 0.5]), np.array([0.5, 0.5]), bins=2)[0] == pytest.approx(1 / 3)
    # 1.0 exactly (and float overshoot) belongs to the last bin
    assert im.histogram_iou(np.array([1.0000001]), np.array([0.999]), bins=100)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_iou_matches_naive(seed):
    v1, l1 = clustered(seed, n_classes=5, d=6)
    v2, l2 = clustered(seed + 10, n_classes=4, d=6)
    res, _ = idm.iou_result(emb_of(v1, l1), emb_of(v2, l2), bins=20, max_pairs=10**6, seed=0)
    g = naive_iou(naive_pairs(v1, l1, True), naive_pairs(v2, l2, True), 20)
    i = naive_iou(naive_pairs(v1, l1, False), naive_pairs(v2, l2, False), 20)
    assert res.scalars["genuine"] == pytest.approx(g, abs=1e-9)
    assert res.scalars["imposter"] == pytest.approx(i, abs=1e-9)
    assert res.scalars["mean"] == pytest.approx((g + i) / 2, abs=1e-9)
    assert res.scalars["genuine_pairs"] == len(naive_pairs(v1, l1, True))


def test_pair_sampling_is_seeded_and_said():
    v, labels = clustered(0, n_classes=30, d=8, sizes=(4, 8))
    full = im.imposter_similarities(v, labels, 30, max_pairs=10**7, seed=0)
    s1 = im.imposter_similarities(v, labels, 30, max_pairs=2000, seed=3)
    s2 = im.imposter_similarities(v, labels, 30, max_pairs=2000, seed=3)
    assert not full.sampled and s1.sampled and len(s1.sims) == 2000 and s1.total == full.total
    np.testing.assert_array_equal(s1.sims, s2.sims)
    assert abs(s1.sims.mean() - full.sims.mean()) < 0.03
    g = im.genuine_similarities(v, labels, 30, max_pairs=50, seed=1)
    assert g.sampled and len(g.sims) == 50
    res, _ = idm.iou_result(emb_of(v, labels), emb_of(v, labels), bins=50, max_pairs=2000, seed=3)
    assert any("sampled (seed 3)" in n for n in res.notes)
    assert res.scalars["imposter"] == pytest.approx(1.0)  # same sample of the same set


# --------------------------------------------------------------------------- leakage


def test_threshold_at_fmr():
    sims = np.arange(10_000) / 10_000  # 0.0000 .. 0.9999
    t = im.threshold_at_fmr(sims, 1e-3)
    assert t == pytest.approx(0.9989)  # 10 imposters (0.9990..0.9999) above it = FMR 1e-3
    assert (sims > t).mean() == pytest.approx(1e-3)
    assert im.threshold_at_fmr(np.array([0.1, 0.3]), 1e-3) == pytest.approx(0.3)


@pytest.mark.parametrize("seed", SEEDS)
def test_leakage_matches_naive(seed):
    v1, l1 = clustered(seed, n_classes=5, d=6)
    v2, l2 = clustered(seed + 7, n_classes=6, d=6)
    res = idm.leakage_result(emb_of(v1, l1), emb_of(v2, l2, prefix="ref"), fmr=0.05, max_pairs=10**6, seed=0)
    imp = sorted(naive_pairs(v2, l2, False))
    k = int(math.floor(0.05 * len(imp)))
    t = imp[len(imp) - 1 - k]
    assert res.scalars["threshold"] == pytest.approx(t, abs=1e-6)
    ref_c = {j: naive_centre([v2[i] for i in range(len(v2)) if l2[i] == j]) for j in set(l2.tolist())}
    leaked = []
    for k_ in range(5):
        c = naive_centre([v1[i] for i in range(len(v1)) if l1[i] == k_])
        best_j = max(ref_c, key=lambda j: naive_cos(c, ref_c[j]))
        best = naive_cos(c, ref_c[best_j])
        row = res.per_item.iloc[k_]
        assert row["max_similarity"] == pytest.approx(best, abs=1e-5)
        assert row["nearest_reference"] == f"ref{best_j}"
        leaked.append(best > t)
    assert res.scalars["share"] == pytest.approx(np.mean(leaked))


def test_leakage_hand_computed():
    # reference: R0 = {0, 10} deg (centre 5), R1 = {90, 100} deg (centre 95)
    # imposter cosines: cos90, cos100, cos80, cos90 -> largest is cos80 = 0.17365;
    # with 4 pairs FMR 1e-3 is not resolved: threshold = the largest imposter = cos80.
    # synthetic S0 = {4, 6} (centre 5: cos 1 to R0 -> leaked), S1 = {40, 50} (centre 45: cos40 to R0
    # and cos50 to R1 -> 0.766 > 0.174 -> leaked too), S2 = {220, 230} (centre 225: cos220 to R0,
    # cos130 to R1 -> nearest R1 at -0.643, not leaked).
    ref = emb_of(at(0, 10, 90, 100), np.array([0, 0, 1, 1]), prefix="R")
    syn = emb_of(at(4, 6, 40, 50, 220, 230), np.array([0, 0, 1, 1, 2, 2]), prefix="S")
    res = idm.leakage_result(syn, ref, fmr=1e-3, max_pairs=100, seed=0)
    assert res.scalars["threshold"] == pytest.approx(cosd(80), abs=1e-6)
    assert res.per_item["max_similarity"].tolist() == pytest.approx([1.0, cosd(40), cosd(130)], abs=1e-6)
    assert res.per_item["nearest_reference"].tolist() == ["R0", "R0", "R1"]
    assert res.per_item["leaked"].tolist() == [True, True, False]
    assert res.scalars["share"] == pytest.approx(2 / 3)
    assert any("not resolved" in n for n in res.notes)


# --------------------------------------------------------------------------- DCFace


@pytest.mark.parametrize("seed", SEEDS)
def test_uniqueness_and_consistency_match_naive(seed):
    v, labels = clustered(seed, n_classes=8, d=4)
    e = emb_of(v, labels)
    u = idm.uniqueness_result(e, threshold=0.3)
    c = idm.consistency_result(e, threshold=0.3)
    centres = {k: naive_centre([v[i] for i in range(len(v)) if labels[i] == k]) for k in range(8)}
    flags, shares = [], []
    for k in range(8):
        nn = max(naive_cos(centres[k], centres[j]) for j in range(8) if j != k)
        assert u.per_item["nearest_similarity"].iloc[k] == pytest.approx(nn, abs=1e-5)
        flags.append(nn < 0.3)
        mine = [naive_cos(v[i], centres[k]) >= 0.3 for i in range(len(v)) if labels[i] == k]
        shares.append(sum(mine) / len(mine))
    assert u.scalars["mean"] == pytest.approx(np.mean(flags))
    assert c.per_item["consistency"].tolist() == pytest.approx(shares)
    assert c.scalars["mean"] == pytest.approx(np.mean(shares))


def test_uniqueness_consistency_hand_computed():
    # centres at 10, 20 and 180 deg: 10 and 20 are within cos10 = 0.985 >= 0.3 -> not unique;
    # 180 is unique. Consistency of A = {-80, 100} deg: centre is undefined (they cancel) ->
    # the zero centre gives cosine 0 < 0.3 for both images: share 0.
    e = emb_of(at(10, 20, 180, -80, 100), np.array([0, 1, 2, 3, 3]))
    u = idm.uniqueness_result(e, threshold=0.3)
    assert u.per_item["unique"].tolist() == [False, False, True, True]
    assert u.scalars["n_unique"] == 2
    c = idm.consistency_result(e, threshold=0.3)
    assert c.per_item["consistency"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert c.scalars["share_images"] == pytest.approx(3 / 5)


# --------------------------------------------------------------------------- context plumbing


class FakeContext:
    """The parts of EvalContext the identity metrics use, over fixed embeddings."""

    def __init__(self, emb: Embeddings, reference: Embeddings | None = None, embedder=None):
        self._emb = {"dataset": emb, "reference": reference}
        self.reference = reference
        self.seed = 0
        self.out_dir = None
        self._embedder = embedder

    def embeddings(self, which="dataset", spec=None):
        return self._emb[which]

    def embedder(self, spec=None):
        return self._embedder

    def require(self, what, metric):
        if getattr(self, what) is None:
            raise UsageError(f"metric {metric!r} needs a reference dataset: pass --reference DIR")


def test_nan_embeddings_are_refused_by_count():
    v = at(0, 10, 50, 60)
    v[1] = np.nan
    v[2, 0] = np.inf
    ctx = FakeContext(emb_of(v, np.array([0, 0, 1, 1])))
    for metric in (idm.Consistency(), idm.Separability(), idm.Uniqueness(), idm.CentreConsistency()):
        with pytest.raises(MetricError, match="2 of 4 dataset embeddings contain NaN"):
            metric.compute(ctx)


def test_options_are_typed_and_unknown_ones_refused():
    assert idm.SimilarityIoU(bins="50").opts["bins"] == 50
    assert idm.Leakage(fmr="1e-4").opts["fmr"] == 1e-4
    with pytest.raises(UsageError, match="unknown option"):
        idm.Separability(bogus="1")
    assert idm.SimilarityIoU(max_pairs="2e6").opts["max_pairs"] == 2_000_000
    for bad in ("many", "1.5"):
        with pytest.raises(UsageError, match="bins=.* is not a valid int"):
            idm.SimilarityIoU(bins=bad)
    with pytest.raises(UsageError, match="takes no"):
        idm.Consistency(option="x")
    with pytest.raises(UsageError, match="needs a reference"):
        idm.SimilarityIoU().compute(FakeContext(emb_of(at(0, 10), np.array([0, 1]))))


def test_metrics_are_registered():
    names = {cls.name for cls in idm.fsbench_register_metrics()}
    assert names == {"cst", "sep", "div", "iou", "leakage", "uniqueness", "consistency", "source_match"}


def _write_dataset(root: Path, ids: int, per_id: int, seed: int, size: int = 112) -> Path:
    """Identities are smooth random colour fields; images of one identity are noisy copies."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(ids):
        base = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
        base = np.kron(base, np.ones((size // 4, size // 4, 1), np.float32))
        d = root / f"p{i:02d}"
        d.mkdir(parents=True)
        for j in range(per_id):
            img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{j}.png")
    return root


def test_through_a_real_eval_context(tmp_path):
    from fsbench.data.dataset import FaceDataset
    from fsbench.evaluation import EvalContext
    from fsbench.registry import get_registry

    reg = get_registry()
    syn = FaceDataset.open(_write_dataset(tmp_path / "syn", 4, 3, seed=0))
    ref = FaceDataset.open(_write_dataset(tmp_path / "ref", 3, 3, seed=1))
    ctx = EvalContext(syn, reference=ref, embedder="pixels:8", out_dir=tmp_path / "out",
                      cache_dir=tmp_path / "cache", seed=0, registry=reg)
    results = {name: reg.metric(name).compute(ctx) for name in ("cst", "sep", "iou", "leakage", "uniqueness", "consistency")}
    emb = ctx.embeddings("dataset")
    cst_ref = naive_cst(emb.vectors, emb.labels)
    assert results["cst"].scalars["mean"] == pytest.approx(np.mean(list(cst_ref.values())), abs=1e-6)
    sep_ref = naive_sep(emb.vectors, emb.labels)
    assert results["sep"].scalars["mean"] == pytest.approx(np.mean(list(sep_ref.values())), rel=1e-4)
    assert len(results["sep"].per_item) == 4
    assert (tmp_path / "out" / "iou_similarity_histograms.png").is_file()
    assert 0.0 <= results["iou"].scalars["genuine"] <= 1.0
    assert results["leakage"].per_item["nearest_reference"].isin(ref.identities).all()

    # DIV through a randomly initialised IResNet (plumbing only: not a face model)
    ctx2 = EvalContext(syn, embedder="iresnet:r4:random:0", cache_dir=tmp_path / "cache", seed=0, registry=reg)
    div = reg.metric("div", m="5").compute(ctx2)
    assert len(div.per_item) == 4 and np.isfinite(div.per_item["div"]).all()
    again = reg.metric("div", m="5").compute(ctx2)  # cached: same numbers
    assert again.per_item["div"].tolist() == div.per_item["div"].tolist()


def test_cst_sep_figure_is_written_atomically(tmp_path):
    import pandas as pd
    from PIL import Image

    from fsbench.report.figures import plot_cst_sep

    frame = pd.DataFrame(
        {"dataset": ["vigface", "dcface", "digiface"], "cst": [0.62, 0.48, 0.71], "sep": [1.9, 1.8, 1.5],
         "div": [0.004, 0.006, float("nan")]}
    )
    out = plot_cst_sep(frame, tmp_path / "fig" / "cst_sep.png")
    assert out == tmp_path / "fig" / "cst_sep.png"
    assert Image.open(out).size[0] > 100
    assert sorted(p.name for p in out.parent.iterdir()) == ["cst_sep.png"]  # no temporary left behind
    with pytest.raises(ValueError, match="lacks column"):
        plot_cst_sep(frame.drop(columns="div"), tmp_path / "x.png")


def test_cli_json_contract_with_dlib_aligned(tmp_path, cli):
    from fsbench.plugins.embedders.dlib import weights_available

    if not weights_available():
        pytest.skip("dlib weights (face_recognition_models) not installed")
    data = _write_dataset(tmp_path / "crops", 3, 2, seed=4, size=112)
    out = cli.json("evaluate", "--dataset", data, "--embedder", "dlib:aligned", "--metrics", "cst,sep",
                   "--out", tmp_path / "ev")
    for name in ("cst", "sep"):
        assert set(out["metrics"][name]) >= {"mean", "std"}
        assert isinstance(out["metrics"][name]["mean"], float)
    assert out["metrics"]["cst"]["space"].startswith("dlib-aligned-")
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "ev" / "per_identity.parquet")
    assert len(frame) == 3 and {"cst.cst", "sep.sep"} <= set(frame.columns)

"""Distribution metrics: Fréchet distance, streaming moments, KID, PRDC, and their plugins.

Every number is checked against a naive implementation written here (pytorch-fid's sqrtm
formula, double loops for MMD, full distance matrices for PRDC) or against a hand-computed
case.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from scipy.spatial.distance import cdist

from fsbench.plugins.metrics._distribution_math import frechet_distance, kid, polynomial_mmd2, prdc
from fsbench.stats import RunningMoments


@pytest.fixture(autouse=True)
def _fresh_feature_memo():
    """Features are memoised per process by (content fingerprint, space); tests that patch an
    embedder's behaviour on datasets another test made with the same bytes must not share them."""
    from fsbench.plugins.metrics import _distribution_features

    _distribution_features._memo.clear()
    yield
    _distribution_features._memo.clear()

# --------------------------------------------------------------------------- naive references


def fd_pytorch_fid(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's formula: general sqrtm of the product, eps only when not finite."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def mmd2_naive(x, y):
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (sxx + syy) / (m * (m - 1)) - 2 * sxy / (m * m)


def prdc_naive(real, fake, k):
    drr, dff, drf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    r_real = np.sort(drr, axis=1)[:, k]
    r_fake = np.sort(dff, axis=1)[:, k]
    precision = np.mean([any(drf[i, j] < r_real[i] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(drf[i, j] < r_fake[j] for j in range(len(fake))) for i in range(len(real))])
    density = sum(drf[i, j] < r_real[i] for i in range(len(real)) for j in range(len(fake))) / (k * len(fake))
    coverage = np.mean([drf[i].min() < r_real[i] for i in range(len(real))])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def random_spd(rng, d, n):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    return x.mean(0), np.cov(x, rowvar=False)


# --------------------------------------------------------------------------- Fréchet distance


@pytest.mark.parametrize("d,n", [(8, 50), (64, 300), (256, 1000)])
def test_frechet_matches_pytorch_fid_formula(d, n):
    rng = np.random.default_rng(d)
    mu1, s1 = random_spd(rng, d, n)
    mu2, s2 = random_spd(rng, d, n)
    mu2 = mu2 + 0.3
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = fd_pytorch_fid(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8 * np.trace(s1))


def test_frechet_known_gaussians_d2048():
    # pytorch-fid's own sanity case: mu 0 vs 1, identity covariances -> FID = d.
    d = 2048
    eye = np.eye(d)
    assert frechet_distance(np.zeros(d), eye, np.ones(d), eye) == pytest.approx(2048.0, rel=1e-9)


def test_frechet_diagonal_hand_case():
    # Diagonal covariances commute: FD = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    fd = frechet_distance(np.array([0.0, 0, 0]), np.diag(a), np.array([3.0, 4, 0]), np.diag(b))
    assert fd == pytest.approx(25.0 + 1.0 + 1.0 + 0.0, rel=1e-12)


def test_frechet_shape_mismatch():
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --------------------------------------------------------------------------- streaming moments


def test_running_moments_equal_batch_statistics():
    rng = np.random.default_rng(1)
    x = rng.normal(loc=5.0, scale=3.0, size=(1000, 16)) @ rng.normal(size=(16, 16))
    acc = RunningMoments(16)
    batches, start = [], 0
    for size in [1, 0, 7, 64, 300, 2, 626]:
        batch = x[start : start + size]
        batch = batch.astype(np.float32) if size == 64 else batch  # float32 input is upcast
        acc.update(batch)
        batches.append(batch.astype(np.float64))
        start += size
    fed = np.concatenate(batches)
    assert start == 1000 and acc.n == 1000
    np.testing.assert_allclose(acc.mean, fed.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(acc.cov, np.cov(fed, rowvar=False), rtol=1e-10, atol=1e-10)


def test_running_moments_merge_and_errors():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4))
    a, b = RunningMoments(4).update(x[:20]), RunningMoments(4).update(x[20:])
    a.merge(b)
    np.testing.assert_allclose(a.cov, np.cov(x, rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        _ = RunningMoments(4).update(x[:1]).cov
    with pytest.raises(ValueError, match="dimension 4"):
        RunningMoments(4).update(np.zeros((3, 5)))


# --------------------------------------------------------------------------- KID


def test_mmd2_hand_case():
    # d = 1, gamma = 1: Kxx off-diagonal 1+1, Kyy 27+27, Kxy 1+1+8+27.
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    assert polynomial_mmd2(x, y) == pytest.approx((2 + 54) / 2 - 2 * 37 / 4)


def test_mmd2_matches_naive():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(15, 6)), rng.normal(0.5, 1.0, size=(15, 6))
    assert polynomial_mmd2(x, y) == pytest.approx(mmd2_naive(x, y), rel=1e-10)


def test_kid_subsets_match_naive_loop():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 5)), rng.normal(0.3, 1.0, size=(30, 5))
    mean, std, size, n_subsets = kid(x, y, subsets=7, subset_size=12, seed=9)
    draw = np.random.RandomState(9)
    vals = []
    for _ in range(7):
        xs = x[draw.choice(40, 12, replace=False)]
        ys = y[draw.choice(30, 12, replace=False)]
        vals.append(mmd2_naive(xs, ys))
    assert size == 12 and n_subsets == 7
    assert mean == pytest.approx(np.mean(vals), rel=1e-10)
    assert std == pytest.approx(np.std(vals), rel=1e-8)


def test_kid_caps_subset_size():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(25, 3))
    mean, std, size, n_subsets = kid(x, y, subsets=3, subset_size=1000, seed=0)
    assert size == 20 and std > 0 and n_subsets == 3  # subsets of 20 out of y's 25 differ
    # Equal sizes: every subset is a permutation of both sets, and MMD ignores order, so the
    # 3 subsets would repeat one number: one estimate of the whole sets, no spread.
    mean, std, size, n_subsets = kid(x, y[:20], subsets=3, subset_size=1000, seed=0)
    assert size == 20 and n_subsets == 1
    assert mean == pytest.approx(mmd2_naive(x, y[:20]), rel=1e-10)
    assert np.isnan(std)


# --------------------------------------------------------------------------- PRDC


def test_prdc_hand_case():
    real, fake = np.array([[0.0], [1.0], [3.0]]), np.array([[0.5], [5.0]])
    # radii (k=1): real 1, 1, 2; fake 4.5, 4.5 (worked out in the docstring of this case)
    out = prdc(real, fake, k=1)
    assert out == pytest.approx({"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 2 / 3})


@pytest.mark.parametrize("chunk", [7, 256])
def test_prdc_matches_naive(chunk):
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(60, 4)), rng.normal(0.4, 1.2, size=(45, 4))
    out = prdc(real, fake, k=5, chunk=chunk)
    assert out == pytest.approx(prdc_naive(real, fake, 5), rel=1e-12)


def test_prdc_too_few_samples():
    with pytest.raises(ValueError, match="need more than 5"):
        prdc(np.zeros((5, 2)), np.ones((10, 2)), k=5)


# --------------------------------------------------------------------------- metric plugins


def pixel_features(root, side):
    from fsbench.data import FaceDataset
    from fsbench.plugins.embedders.pixels import PixelEmbedder

    ds = FaceDataset.open(root)
    return PixelEmbedder(str(side)).embed(np.stack([ds.read(i) for i in range(len(ds))])).astype(np.float64)


@pytest.fixture
def pair(folder):
    # 40 images each; pixels:2 gives 12-d features, so both covariances are full rank.
    return folder("gen", ids=4, per_id=10, size=16, seed=0), folder("real", ids=5, per_id=8, size=16, seed=1)


def make_ctx(a, b, features="pixels:2", **kw):
    from fsbench.data import FaceDataset
    from fsbench.evaluation import EvalContext

    return EvalContext(FaceDataset.open(a), reference=FaceDataset.open(b) if b else None, features=features, **kw)


def test_fid_kid_prdc_plugins_match_naive(pair):
    from fsbench.registry import get_registry

    a, b = pair
    fa, fb = pixel_features(a, 2), pixel_features(b, 2)
    reg = get_registry()
    ctx = make_ctx(a, b, seed=3)

    fid = reg.metric("fid").compute(ctx)
    ref = fd_pytorch_fid(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert fid.scalars["fid"] == pytest.approx(ref, rel=1e-6)
    assert fid.space == "pixels-2-none" and fid.notes == []
    assert fid.scalars["n_dataset"] == 40 and fid.scalars["n_reference"] == 40

    fd = reg.metric("fd:pixels:2").compute(make_ctx(a, b, features=None))
    assert fd.scalars["fd"] == pytest.approx(ref, rel=1e-6) and fd.space == "pixels-2-none"

    k = reg.metric("kid", subsets="4", subset_size="30").compute(ctx)
    draw, vals = np.random.RandomState(3), []
    for _ in range(4):
        xs, ys = fa[draw.choice(40, 30, replace=False)], fb[draw.choice(40, 30, replace=False)]
        vals.append(mmd2_naive(xs, ys))
    assert k.scalars["mean"] == pytest.approx(np.mean(vals), rel=1e-5)
    assert k.scalars["std"] == pytest.approx(np.std(vals), rel=1e-4)
    assert k.space == "pixels-2-none"

    p = reg.metric("prdc").compute(ctx)
    naive = prdc_naive(fb, fa, 5)
    for key, value in naive.items():
        assert p.scalars[key] == pytest.approx(value, abs=1e-12), key


def test_rank_and_subset_notes(pair):
    from fsbench.registry import get_registry

    a, b = pair
    ctx = make_ctx(a, b, features="pixels:4")  # 48-d features from 40 samples
    fid = get_registry().metric("fid").compute(ctx)
    assert np.isfinite(fid.scalars["fid"])
    assert any("at least 49 samples" in n for n in fid.notes)
    kid_ = get_registry().metric("kid").compute(ctx)
    assert kid_.scalars["subset_size"] == 40 and any("capped at 40" in n for n in kid_.notes)


def test_kid_whole_set_is_one_estimate_without_spread(pair):
    """40 images a side, subsets of 1000 capped at 40: every subset is the whole of both sets,
    so 100 subsets would only repeat one number (std ~1e-17). One unbiased MMD^2, std NaN."""
    from fsbench.registry import get_registry
    from fsbench.report.headline import headlines

    a, b = pair
    fa, fb = pixel_features(a, 2), pixel_features(b, 2)
    r = get_registry().metric("kid").compute(make_ctx(a, b))
    assert r.scalars["mean"] == pytest.approx(mmd2_naive(fa, fb), rel=1e-5)
    assert np.isnan(r.scalars["std"]) and r.scalars["n_subsets"] == 1 and r.scalars["subset_size"] == 40
    assert "subsets = whole set (n=40), no spread: one MMD^2 estimate, std undefined" in r.notes
    assert r.to_json()["std"] is None
    assert "±" not in headlines("kid", r.scalars)[0].text()
    # subsets smaller than the sets differ: a real spread over the subsets asked for
    sub = get_registry().metric("kid", subsets="5", subset_size="30").compute(make_ctx(a, b))
    assert sub.scalars["n_subsets"] == 5 and sub.scalars["std"] > 0
    assert not any("whole set" in n for n in sub.notes)


def test_features_computed_once_per_set(pair, monkeypatch):
    from fsbench.plugins.embedders.pixels import PixelEmbedder
    from fsbench.registry import get_registry

    calls = []
    original = PixelEmbedder.embed
    monkeypatch.setattr(PixelEmbedder, "embed", lambda self, x: calls.append(len(x)) or original(self, x))
    a, b = pair
    ctx = make_ctx(a, b, features="pixels:3")
    for name in ("fid", "kid", "prdc"):
        get_registry().metric(name).compute(ctx)
    assert sum(calls) == 80  # each of the two sets embedded once, for all three metrics
    calls.clear()
    get_registry().metric("fid").compute(make_ctx(a, b, features="pixels:3"))  # a new run: disk cache
    assert calls == []


def test_plugin_errors(pair, monkeypatch, tmp_path):
    from fsbench.errors import CheckpointError, MetricError, UsageError
    from fsbench.plugins.metrics._distribution_features import _checked
    from fsbench.registry import get_registry

    a, b = pair
    with pytest.raises(UsageError, match="needs a reference"):
        get_registry().metric("fid").compute(make_ctx(a, None))
    with pytest.raises(UsageError, match="unknown option"):
        get_registry().metric("kid", bins="3")
    with pytest.raises(UsageError, match="k='five' is not a valid int"):
        get_registry().metric("prdc", k="five")
    monkeypatch.delenv("FSBENCH_INCEPTION", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(CheckpointError, match="pt_inception-2015-12-05-6726825d.pth.*fd:dlib"):
        get_registry().metric("fid").compute(make_ctx(a, b, features=None))
    with pytest.raises(MetricError, match="feature space 'pixels-2-none', not 'dlib"):
        _checked({"space": np.array("pixels-2-none")}, "dlib-default-x", "statistics")


# --------------------------------------------------------------------------- commands


def test_evaluate_prints_all_with_space(pair, cli):
    a, b = pair
    out = cli.json("evaluate", "--dataset", a, "--reference", b, "--features", "pixels:2",
                   "--metrics", "fid,kid,prdc", "--out", a.parent / "ev")
    m = out["metrics"]
    assert set(m) == {"fid", "kid", "prdc"}
    assert all(m[k]["space"] == "pixels-2-none" for k in m)
    assert m["fid"]["fid"] > 0 and "std" in m["kid"] and 0 <= m["prdc"]["coverage"] <= 1


def test_stats_and_fid_commands(pair, cli, tmp_path):
    a, b = pair
    fa, fb = pixel_features(a, 2), pixel_features(b, 2)
    ref = fd_pytorch_fid(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))

    direct = cli.json("fid", a, b, "--features", "pixels:2")
    assert direct["fid"] == pytest.approx(ref, rel=1e-6) and direct["space"] == "pixels-2-none"

    s = cli.json("stats", b, "--out", tmp_path / "real.stats", "--features", "pixels:2")
    assert s["n"] == 40 and s["dim"] == 12 and s["space"] == "pixels-2-none"
    with np.load(tmp_path / "real.stats") as z:  # pytorch-fid's keys, no ".npz" appended
        np.testing.assert_allclose(z["mu"], fb.mean(0), rtol=1e-6)
        np.testing.assert_allclose(z["sigma"], np.cov(fb, rowvar=False), rtol=1e-5, atol=1e-9)
        assert str(z["space"]) == "pixels-2-none"
    mixed = cli.json("fid", a, tmp_path / "real.stats", "--features", "pixels:2")
    assert mixed["fid"] == pytest.approx(ref, rel=1e-6)

    # A pytorch-fid file (mu, sigma only) is accepted, with a note.
    np.savez(tmp_path / "pf.npz", mu=fb.mean(0), sigma=np.cov(fb, rowvar=False))
    cli.json("stats", a, "--out", tmp_path / "gen.npz", "--features", "pixels:2")
    both = cli.json("fid", tmp_path / "gen.npz", tmp_path / "pf.npz")
    assert both["fid"] == pytest.approx(ref, rel=1e-6) and both["space"] == "pixels-2-none"
    assert any("no feature space" in n for n in both["notes"])

    # Mismatched spaces and bad inputs: one line, exit 2.
    r = cli("fid", a, tmp_path / "real.stats", "--features", "pixels:3")
    assert r.exit_code == 2 and "feature space 'pixels-2-none'" in r.stderr and "pixels-3-none" in r.stderr
    cli.json("stats", a, "--out", tmp_path / "gen3.npz", "--features", "pixels:3")
    r = cli("fid", tmp_path / "gen3.npz", tmp_path / "real.stats")
    assert r.exit_code == 2 and "feature space" in r.stderr
    r = cli("fid", a, tmp_path / "nothing")
    assert r.exit_code == 2 and "neither a dataset folder nor" in r.stderr
    (tmp_path / "bad.npz").write_bytes(b"junk")
    r = cli("fid", tmp_path / "bad.npz", tmp_path / "real.stats")
    assert r.exit_code == 2 and "bad.npz" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_frechet_singular_covariance_falls_back():
    # diag(0, 1, 4) has no Cholesky factor: the symmetric square root is used instead.
    from fsbench.plugins.metrics._distribution_math import trace_sqrt_product

    a, b = np.array([0.0, 1.0, 4.0]), np.array([9.0, 4.0, 1.0])
    assert trace_sqrt_product(np.diag(a), np.diag(b)) == pytest.approx(0 + 2 + 2, rel=1e-12)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20, 40))  # 20 samples, 40 dims: rank 19
    s1, s2 = np.cov(x, rowvar=False), random_spd(rng, 40, 400)[1]
    assert frechet_distance(x.mean(0), s1, np.zeros(40), s2) == pytest.approx(
        fd_pytorch_fid(x.mean(0), s1, np.zeros(40), s2), rel=1e-6
    )


def test_failed_rows_are_dropped_and_noted(pair, monkeypatch, cli):
    from fsbench.plugins.embedders.pixels import PixelEmbedder
    from fsbench.registry import get_registry

    monkeypatch.setattr(PixelEmbedder, "failures", lambda self: {0: "no face found"})
    a, b = pair
    fa, fb = pixel_features(a, 2)[1:], pixel_features(b, 2)[1:]  # one batch each: row 0 dropped
    fid = get_registry().metric("fid").compute(make_ctx(a, b))
    ref = fd_pytorch_fid(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert fid.scalars["fid"] == pytest.approx(ref, rel=1e-6) and fid.scalars["n_dataset"] == 39
    assert "dataset: 1 of 40 images gave no feature vector (e.g. no face found) and are left out" in fid.notes
    p = get_registry().metric("prdc").compute(make_ctx(a, b))
    assert p.scalars["n_reference"] == 39 and len(p.notes) == 2
    out = cli.json("fid", a, b, "--features", "pixels:2")
    assert out["fid"] == pytest.approx(ref, rel=1e-6) and len(out["notes"]) == 2

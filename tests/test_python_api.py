"""The Python API: `fsbench.metrics` on numpy arrays, `fsbench.evaluate`, and precomputed
embeddings (`fsbench evaluate --embeddings file.npz`).

Every `fsbench.metrics` function is checked against a plain, loop-by-loop implementation of
REFERENCE.md's definition written here, on random data, and on small cases worked out by
hand; `fsbench.evaluate` against the command's --json numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from scipy import linalg

import fsbench
from fsbench.errors import MetricError, UsageError

# --------------------------------------------------------------------------- references, written plainly


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_cst(E, labels):
    """VIGFace Eq. 10: per class, (1/N^2) sum_i sum_j cos(f_i, f_j); mean and std over classes."""
    F = _unit(E)
    per_class = []
    for k in sorted(set(labels.tolist())):
        rows = F[labels == k]
        if len(rows) < 2:
            continue
        total = sum(float(a @ b) for a in rows for b in rows)
        per_class.append(total / len(rows) ** 2)
    return float(np.mean(per_class)), float(np.std(per_class))


def ref_sep(E, labels):
    """VIGFace Eq. 13-14: mean over a class's images of cos(f, own centre) / max cos(f, other centre)."""
    F = _unit(E)
    classes = sorted(set(labels.tolist()))
    centres = {}
    for k in classes:
        c = F[labels == k].mean(axis=0)
        centres[k] = c / np.linalg.norm(c)
    per_class = []
    for k in classes:
        ratios = []
        for f in F[labels == k]:
            ccs = float(f @ centres[k])
            nnccs = max(float(f @ centres[j]) for j in classes if j != k)
            ratios.append(ccs / nnccs)
        per_class.append(np.mean(ratios))
    return float(np.mean(per_class)), float(np.std(per_class))


def ref_iou(E, labels, E_ref, labels_ref, bins=100):
    """VIGFace Table 1: histograms of genuine / imposter cosines over [-1, 1], sum(min) / sum(max)."""

    def sims(E, labels):
        F = _unit(E)
        genuine, imposter = [], []
        for i, j in itertools.combinations(range(len(F)), 2):
            (genuine if labels[i] == labels[j] else imposter).append(float(F[i] @ F[j]))
        return genuine, imposter

    def hist(values):
        h = np.histogram(np.clip(values, -1, 1), bins=np.linspace(-1, 1, bins + 1))[0].astype(float)
        return h / h.sum()

    (g, i), (gr, ir) = sims(E, labels), sims(E_ref, labels_ref)
    out = {}
    for name, a, b in (("genuine", g, gr), ("imposter", i, ir)):
        ha, hb = hist(a), hist(b)
        out[name] = float(np.minimum(ha, hb).sum() / np.maximum(ha, hb).sum())
    out["mean"] = (out["genuine"] + out["imposter"]) / 2
    return out


def ref_fd(X, Y):
    """pytorch-fid: ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2))."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    s1, s2 = np.cov(X, rowvar=False), np.cov(Y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    d = X.mean(0) - Y.mean(0)
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def ref_mmd2(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as sums over index pairs."""
    m, d = x.shape

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def ref_kid(X, Y, subsets, subset_size, seed):
    """torch-fidelity: subsets drawn without replacement from one RandomState, x then y."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        xs = X[rng.choice(len(X), subset_size, replace=False)]
        ys = Y[rng.choice(len(Y), subset_size, replace=False)]
        values.append(ref_mmd2(xs, ys))
    return float(np.mean(values)), float(np.std(values))


def ref_prdc(fake, real, k):
    """Kynkäänniemi 2019 / Naeem 2020 with brute-force distance matrices."""
    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    r_real = np.sort(dist(real, real), axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(dist(fake, fake), axis=1)[:, k]
    fr = dist(fake, real)  # (M, N)
    return {
        "precision": float(np.mean([(fr[j] < r_real).any() for j in range(len(fake))])),
        "recall": float(np.mean([(fr[:, i] < r_fake).any() for i in range(len(real))])),
        "density": float(sum((fr[j] < r_real).sum() for j in range(len(fake))) / (k * len(fake))),
        "coverage": float(np.mean([fr[:, i].min() < r_real[i] for i in range(len(real))])),
    }


def ref_div(q, labels):
    per_class = [np.var(q[labels == k]) for k in sorted(set(labels.tolist())) if (labels == k).sum() >= 2]
    return float(np.mean(per_class)), float(np.std(per_class))


def ref_verification(e1, e2, same, folds=10):
    """insightface's calculate_roc: per fold, the best training threshold applied to the fold."""
    dist = ((_unit(e1) - _unit(e2)) ** 2).sum(1)
    thresholds = np.arange(0, 4, 0.01)
    n = len(dist)
    sizes = [n // folds + (1 if f < n % folds else 0) for f in range(folds)]
    bounds = np.cumsum([0, *sizes])
    accs, best = [], []
    for f in range(folds):
        test = np.arange(bounds[f], bounds[f + 1])
        train = np.setdiff1d(np.arange(n), test)
        train_acc = [np.mean((dist[train] < t) == same[train]) for t in thresholds]
        t = thresholds[int(np.argmax(train_acc))]
        best.append(t)
        accs.append(np.mean((dist[test] < t) == same[test]))
    return float(np.mean(accs)), float(np.std(accs)), np.array(best)


# --------------------------------------------------------------------------- data


def _identities(seed=0, ids=12, per_id=5, dim=16, spread=0.8, names=False):
    """Clustered embeddings: identity centres plus noise, float32, optionally named labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    labels = np.repeat(np.arange(ids), per_id)
    E = (centres[labels] + spread * rng.normal(size=(len(labels), dim))).astype(np.float32)
    if names:
        return E, np.array([f"person_{k:03d}" for k in labels])
    return E, labels


# --------------------------------------------------------------------------- import


def test_import_fsbench_stays_light_and_loads_the_api_on_first_use():
    code = (
        "import sys, fsbench\n"
        "heavy = lambda: sorted({'numpy', 'pandas', 'torch', 'scipy'} & set(sys.modules))\n"
        "print('BEFORE=' + ','.join(heavy()))\n"
        "assert callable(fsbench.evaluate) and callable(fsbench.metrics.cst)\n"
        "assert 'metrics' in dir(fsbench) and 'evaluate' in dir(fsbench)\n"
        "try:\n    fsbench.no_such_thing\nexcept AttributeError as e:\n    print('ERR=' + str(e))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "BEFORE="
    assert lines[1] == "ERR=module 'fsbench' has no attribute 'no_such_thing'"


# --------------------------------------------------------------------------- fsbench.metrics vs references


@pytest.mark.parametrize("names", [False, True])
def test_cst_and_sep_equal_the_reference(names):
    E, y = _identities(seed=1, names=names)
    for fn, ref in ((fsbench.metrics.cst, ref_cst), (fsbench.metrics.sep, ref_sep)):
        got = fn(E, y)
        mean, std = ref(E, y)
        assert got.mean == pytest.approx(mean, rel=1e-5)
        assert got.std == pytest.approx(std, rel=1e-4)
        assert got.n == 12 and float(got) == got.mean


def test_cst_and_sep_on_hand_computed_cases():
    e = np.eye(4)
    # two identities, each on two orthogonal unit vectors (scaled: rows are normalised first):
    # CST_k = (1 + 1 + 0 + 0) / 4 = 0.5 for both
    got = fsbench.metrics.cst(np.stack([3 * e[0], e[1], e[2], 0.5 * e[3]]), np.array([0, 0, 1, 1]))
    assert (got.mean, got.std, got.n) == (pytest.approx(0.5), pytest.approx(0.0), 2)
    # identity a on e0, identity b on (e0 + e1)/sqrt 2: CST 1; CCS = 1 and NNCCS = cos 45 deg -> SEP = sqrt 2
    u = (e[0] + e[1]) / math.sqrt(2)
    E, y = np.stack([e[0], e[0], u, u]), np.array(["a", "a", "b", "b"])
    assert fsbench.metrics.cst(E, y).mean == pytest.approx(1.0)
    sep = fsbench.metrics.sep(E, y)
    assert (sep.mean, sep.std) == (pytest.approx(math.sqrt(2), rel=1e-6), pytest.approx(0.0, abs=1e-6))
    # CST leaves out an identity with one image
    assert fsbench.metrics.cst(np.stack([e[0], e[1], e[2]]), np.array([0, 0, 1])).n == 1


def test_iou_equals_the_reference_and_the_hand_cases():
    E, y = _identities(seed=2, ids=8, per_id=6)
    R, yr = _identities(seed=3, ids=10, per_id=4, spread=1.2)
    got = fsbench.metrics.iou(E, y, R, yr, bins=40)
    want = ref_iou(E, y, R, yr, bins=40)
    assert got == pytest.approx(want, rel=1e-9)
    assert fsbench.metrics.iou(E, y, E, y) == {"mean": 1.0, "genuine": 1.0, "imposter": 1.0}  # identical sets
    # genuine cosines all 1 (same vector) vs all 0 (orthogonal pairs): disjoint histograms
    e = np.eye(4)
    same = fsbench.metrics.iou(np.stack([e[0], e[0], e[1], e[1]]), np.array([0, 0, 1, 1]),
                               np.stack([e[0], e[1], e[2], e[3]]), np.array([0, 0, 1, 1]))
    assert same["genuine"] == 0.0


def test_fd_kid_prdc_equal_the_references():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    Y = (rng.normal(size=(90, 6)) * 1.3 + 0.4).astype(np.float32)
    assert fsbench.metrics.fd(X, Y) == pytest.approx(ref_fd(X, Y), rel=1e-6)
    assert fsbench.metrics.fd(X, X) == pytest.approx(0.0, abs=1e-9)

    got = fsbench.metrics.kid(X, Y, subsets=4, subset_size=15, seed=7)
    mean, std = ref_kid(X, Y, 4, 15, 7)
    assert (got.mean, got.std, got.n) == (pytest.approx(mean, rel=1e-9), pytest.approx(std, rel=1e-9), 4)

    assert fsbench.metrics.prdc(X, Y, k=3) == pytest.approx(ref_prdc(X, Y, 3), rel=1e-12)


def test_fd_hand_case():
    # pytorch-fid's sanity case in small: equal covariances, means 1 apart in each of d dims -> d
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(400, 3))
    Z = (Z - Z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(Z, rowvar=False))).T  # covariance exactly I
    assert fsbench.metrics.fd(Z, Z + 1.0) == pytest.approx(3.0, rel=1e-5)


def test_div_equals_the_reference():
    rng = np.random.default_rng(6)
    y = np.repeat(np.arange(7), 4)
    q = rng.uniform(0.5, 0.9, size=len(y))
    got = fsbench.metrics.div(q, y)
    assert (got.mean, got.std, got.n) == (pytest.approx(ref_div(q, y)[0], rel=1e-12),
                                          pytest.approx(ref_div(q, y)[1], rel=1e-12), 7)


def test_verification_equals_insightfaces_loop():
    rng = np.random.default_rng(7)
    n, d = 305, 8  # not a multiple of 10: the first folds hold one pair more
    e1 = rng.normal(size=(n, d))
    same = rng.random(n) < 0.5
    e2 = np.where(same[:, None], e1 + 0.9 * rng.normal(size=(n, d)), rng.normal(size=(n, d)))
    got = fsbench.metrics.verification(e1, e2, same)
    acc, std, thresholds = ref_verification(e1, e2, same)
    assert got.accuracy == pytest.approx(acc, abs=1e-12)
    assert got.std == pytest.approx(std, abs=1e-12)
    np.testing.assert_allclose(got.thresholds, thresholds)
    assert 0.6 < got.accuracy < 1.0


def test_score_gives_the_full_result():
    E, y = _identities(seed=8)
    R, yr = _identities(seed=9)
    result = fsbench.metrics.score("leakage", E, y, R, yr, fmr=0.01)
    assert result.metric == "leakage" and result.scalars["fmr"] == 0.01
    assert len(result.per_item) == 12 and result.space.startswith("embeddings:")
    assert fsbench.metrics.score("cst", E, y).scalars["mean"] == fsbench.metrics.cst(E, y).mean


@pytest.mark.parametrize("call, message", [
    (lambda E, y: fsbench.metrics.cst(E[0], y), "E has shape (16,), expected (N, D)"),
    (lambda E, y: fsbench.metrics.cst(E, y[:-1]), "labels has shape (59,), expected (60,)"),
    (lambda E, y: fsbench.metrics.sep(np.where(np.arange(60)[:, None] == 3, np.nan, E), y), "E: 1 of 60 rows hold NaN"),
    (lambda E, y: fsbench.metrics.cst(E, y.astype(float)), "labels holds float64 values"),
    (lambda E, y: fsbench.metrics.iou(E, y, E[:, :3], y), "E_ref has 3 dimensions"),
    (lambda E, y: fsbench.metrics.cst(np.zeros_like(E), y), "E: 60 rows are all zero"),
    (lambda E, y: fsbench.metrics.verification(E, E[:, :3], y > 5), "E1 (60, 16) and E2 (60, 3)"),
    (lambda E, y: fsbench.metrics.verification(E, E, y), "same must hold booleans"),
    (lambda E, y: fsbench.metrics.div(E, y), "serfiq has shape (60, 16), expected (N,)"),
])
def test_bad_shapes_are_one_line_value_errors(call, message):
    E, y = _identities()
    with pytest.raises(ValueError) as info:
        call(E, y)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_undefined_metric_raises_metric_error():
    E, _ = _identities()
    with pytest.raises(MetricError, match="SEP needs >= 2 identities"):
        fsbench.metrics.sep(E, np.zeros(len(E), int))


# --------------------------------------------------------------------------- fsbench.evaluate


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "W"
    run_cli("data", "make", "procedural", "--out", out, "--ids", 20, "--per-id", 4, "--seed", 0, "--no-masks")
    return out


def test_evaluate_matches_the_command(world, tmp_path, cli):
    result = fsbench.evaluate(dataset=world, metrics=["cst", "sep"], out=tmp_path / "py", use_cache=False)
    shown = cli.json("evaluate", "--dataset", world, "--metrics", "cst,sep", "--out", tmp_path / "cli", "--no-cache")
    frame = result.to_pandas()
    assert list(frame.index) == ["W"]
    for metric in ("cst", "sep"):
        for key, value in shown["metrics"][metric].items():
            if key == "space":
                assert result.results[metric].space == value
            elif value is not None:
                assert result.results[metric].scalars[key] == value
                assert frame.loc["W", f"{metric}.{key}"] == value
    assert shown["metrics"]["cst"]["space"].startswith("judge-")
    assert (tmp_path / "py" / "metrics.json").exists()
    before = (tmp_path / "py" / "metrics.json").read_bytes()
    with pytest.raises(UsageError, match="overwrite"):  # the command's guard, from Python too
        fsbench.evaluate(dataset=world, metrics=["cst"], out=tmp_path / "py")
    assert (tmp_path / "py" / "metrics.json").read_bytes() == before
    again = fsbench.evaluate(dataset=world, metrics=["cst"], out=tmp_path / "py", overwrite=True)
    assert set(again.results) == {"cst"} and (tmp_path / "py" / ".fsbench-results.json").exists()


def test_to_pandas_lines_up_several_results(tmp_path):
    import pandas as pd

    a = fsbench.evaluate(embeddings=_identities(seed=1), metrics="cst,summary", out=tmp_path / "a")
    b = fsbench.evaluate(embeddings=_identities(seed=2, ids=5), metrics=["summary", "cst"], out=tmp_path / "b")
    frame = pd.concat([a.to_pandas(), b.to_pandas()])
    assert frame["summary.identities"].tolist() == [12.0, 5.0]
    assert list(a.to_pandas().columns)[:2] == ["cst.mean", "cst.std"]  # the order of --metrics


def test_evaluate_refuses_unknown_keywords():
    with pytest.raises(TypeError, match="unexpected keyword argument.*refrence"):
        fsbench.evaluate(dataset="x", refrence="y")


# --------------------------------------------------------------------------- precomputed embeddings


@pytest.fixture
def npz(tmp_path) -> Path:
    E, y = _identities(seed=11, names=True)
    R, yr = _identities(seed=12, ids=9, per_id=4)
    q = np.random.default_rng(13).uniform(0.5, 0.9, size=len(E))
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=E, labels=y, reference_embeddings=R, reference_labels=yr, serfiq=q)
    return path


def test_embeddings_file_gives_the_numbers_of_fsbench_metrics(npz, tmp_path, cli):
    shown = cli.json("evaluate", "--embeddings", npz, "--metrics", "summary,cst,sep,iou,fd,div", "--out", tmp_path / "e")
    with np.load(npz) as z:
        E, y, R, yr, q = (z[k] for k in ("embeddings", "labels", "reference_embeddings", "reference_labels", "serfiq"))
    m = shown["metrics"]
    for name in ("cst", "sep", "div"):
        want = getattr(fsbench.metrics, name)(q if name == "div" else E, y)
        assert (m[name]["mean"], m[name]["std"]) == (want.mean, want.std)
    assert m["iou"]["mean"] == fsbench.metrics.iou(E, y, R, yr)["mean"]
    assert m["fd"]["fd"] == fsbench.metrics.fd(E, R)
    assert (m["summary"]["identities"], m["summary"]["images"]) == (12, 60)
    # the space names the file by its sha256
    space = "embeddings:" + hashlib.sha256(npz.read_bytes()).hexdigest()[:12]
    assert {m[k]["space"] for k in ("cst", "sep", "iou", "fd")} == {space}
    assert shown["provenance"]["embedder_key"] == space
    assert shown["provenance"]["dataset"]["info"]["sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()
    # the same from Python: the file, and its arrays
    from_file = fsbench.evaluate(embeddings=npz, metrics=["cst", "sep"], out=tmp_path / "p")
    from_arrays = fsbench.evaluate(embeddings={"embeddings": E, "labels": y}, metrics=["cst", "sep"], out=tmp_path / "q")
    for r in (from_file, from_arrays):
        assert r.results["cst"].scalars["mean"] == m["cst"]["mean"]
        assert r.results["sep"].scalars["mean"] == m["sep"]["mean"]


def _save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    E, y = _identities()
    nan = E.copy()
    nan[7, 3] = np.nan
    not_npz = tmp / "text.npz"
    not_npz.write_text("hello")
    return {
        "no labels": (_save(tmp / "a.npz", embeddings=E), "no 'labels' array"),
        "pickled labels": (_save(tmp / "b.npz", embeddings=E, labels=np.array(list(y), dtype=object)),
                           "pickled object array"),
        "NaN": (_save(tmp / "c.npz", embeddings=nan, labels=y), "1 of 60 rows hold NaN or inf (first: row 7)"),
        "short labels": (_save(tmp / "d.npz", embeddings=E, labels=y[:5]), "labels has shape (5,), expected (60,)"),
        "1-d embeddings": (_save(tmp / "e.npz", embeddings=E[0], labels=y), "embeddings has shape (16,)"),
        "lonely reference": (_save(tmp / "f.npz", embeddings=E, labels=y, reference_embeddings=E),
                             "come together"),
        "typo": (_save(tmp / "g.npz", embeddings=E, labels=y, reference_embedings=E), "unknown array 'reference_embedings'"),
        "not an npz": (not_npz, "not an .npz file"),
    }


@pytest.mark.parametrize("case", ["no labels", "pickled labels", "NaN", "short labels", "1-d embeddings",
                                  "lonely reference", "typo", "not an npz"])
def test_a_bad_npz_is_refused_in_one_line(case, tmp_path, cli):
    path, message = _bad_files(tmp_path)[case]
    result = cli("evaluate", "--embeddings", path, "--metrics", "cst", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: ")
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_embeddings_refuse_options_they_replace(npz, tmp_path, cli):
    for extra, name in ((("--dataset", tmp_path), "--dataset"), (("--embedder", "dlib"), "--embedder"),
                        (("--reference", tmp_path), "--reference")):
        result = cli("evaluate", "--embeddings", npz, *extra, "--metrics", "cst", "--out", tmp_path / "o")
        assert result.exit_code == 2 and f"drop {name}" in result.stderr
    result = cli("evaluate", "--embeddings", tmp_path / "missing.npz", "--metrics", "cst")
    assert result.exit_code == 2 and "missing.npz: no such embeddings file" in result.stderr
    no_ref = _save(tmp_path / "noref.npz", embeddings=_identities()[0], labels=_identities()[1])
    with pytest.raises(UsageError, match="needs reference embeddings"):
        fsbench.evaluate(embeddings=no_ref, metrics=["iou"], out=tmp_path / "r")

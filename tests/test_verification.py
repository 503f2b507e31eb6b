"""Verification protocol, packs and pair readers, checked against a plain loop of the reference.

`loop_protocol` below restates insightface's calculate_roc / calculate_val plainly (one
threshold at a time); the fast sort/searchsorted version must match it exactly.
"""

from __future__ import annotations

import csv
import json
import os
import pickle

import numpy as np
import pytest
from scipy.interpolate import interp1d
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize

from fsbench.data.binpack import read_bin, write_bin
from fsbench.errors import DatasetError, MetricError
from fsbench.verification import evaluate_distances, evaluate_pairs, fold_ids

# --------------------------------------------------------------------------- plain reference


def _splits(n, n_folds):
    idx = np.arange(n)
    if n_folds == 1:
        return [(idx, idx)]
    return list(KFold(n_splits=n_folds, shuffle=False).split(idx))


def _acc_at(t, dist, same):
    pred = np.less(dist, t)
    tp = np.sum(np.logical_and(pred, same))
    fp = np.sum(np.logical_and(pred, np.logical_not(same)))
    tn = np.sum(np.logical_and(np.logical_not(pred), np.logical_not(same)))
    fn = np.sum(np.logical_and(np.logical_not(pred), same))
    tpr = 0 if tp + fn == 0 else float(tp) / float(tp + fn)
    fpr = 0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def _val_far_at(t, dist, same):
    pred = np.less(dist, t)
    ta = np.sum(np.logical_and(pred, same))
    fa = np.sum(np.logical_and(pred, np.logical_not(same)))
    return float(ta) / float(np.sum(same)), float(fa) / float(np.sum(np.logical_not(same)))


def loop_protocol(e1, e2, same, n_folds=10, far_target=1e-3):
    """insightface's verification, threshold by threshold (repeated FARs collapsed for scipy)."""
    e1, e2 = normalize(e1), normalize(e2)
    dist = np.sum(np.square(np.subtract(e1, e2)), 1)
    same = np.asarray(same, dtype=bool)
    thresholds = np.arange(0, 4, 0.01)
    acc, best_t = [], []
    for train, test in _splits(len(dist), n_folds):
        acc_train = np.zeros(len(thresholds))
        for i, t in enumerate(thresholds):
            acc_train[i] = _acc_at(t, dist[train], same[train])[2]
        b = np.argmax(acc_train)
        best_t.append(thresholds[b])
        acc.append(_acc_at(thresholds[b], dist[test], same[test])[2])
    thresholds = np.arange(0, 4, 0.001)
    val, far = [], []
    for train, test in _splits(len(dist), n_folds):
        far_train = np.zeros(len(thresholds))
        for i, t in enumerate(thresholds):
            far_train[i] = _val_far_at(t, dist[train], same[train])[1]
        if np.max(far_train) >= far_target:
            xs, ts = [], []
            for f, t in zip(far_train, thresholds):
                if not xs or f != xs[-1]:
                    xs.append(f)
                    ts.append(t)
            th = float(interp1d(xs, ts, kind="slinear")(far_target))
        else:
            th = 0.0
        v, f = _val_far_at(th, dist[test], same[test])
        val.append(v)
        far.append(f)
    return np.array(acc), np.array(best_t), np.array(val), np.array(far)


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("seed,n,dim,n_folds", [(0, 600, 8, 10), (1, 1003, 4, 10), (2, 457, 16, 10),
                                                (3, 211, 3, 7), (4, 120, 5, 1)])
def test_matches_loop_reference(seed, n, dim, n_folds):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.5
    e1 = rng.normal(size=(n, dim)).astype(np.float32)
    # genuine pairs are noisy copies, so the best threshold is interior and folds disagree
    e2 = np.where(same[:, None], e1 + rng.normal(scale=0.9, size=(n, dim)), rng.normal(size=(n, dim)))
    e2 = e2.astype(np.float32)
    acc, best_t, val, far = loop_protocol(e1, e2, same, n_folds)
    res = evaluate_pairs(e1, e2, same, n_folds=n_folds)
    np.testing.assert_array_equal(res.accuracies, acc)
    np.testing.assert_array_equal(res.thresholds, best_t)
    assert res.accuracy == np.mean(acc) and res.std == np.std(acc)
    assert 0.55 < res.accuracy < 0.98
    assert res.tar_at_far == np.mean(val) and res.far == np.mean(far) and res.tar_std == np.std(val)
    assert res.pairs == n and res.folds == n_folds
    if n % n_folds:
        assert list(res.fold_sizes[: n % n_folds]) == [n // n_folds + 1] * (n % n_folds)
        assert any("first" in note for note in res.notes)


def test_hand_computed_tiny_case():
    # 4 pairs, 2 folds of 2. Squared distances from unit vectors: 0 and 2 (orthogonal) or 4 (opposite).
    a = np.array([[1, 0], [1, 0], [1, 0], [1, 0]], dtype=np.float64)
    b = np.array([[2, 0], [0, 1], [3, 0], [-1, 0]], dtype=np.float64)  # dist 0, 2, 0, 4
    same = [True, False, True, False]
    res = evaluate_pairs(a, b, same, n_folds=2)
    # fold 0 = pairs 0,1 ; trained on pairs 2,3 (dist 0 same, 4 diff): accuracy 1 for any
    # threshold in (0, 4] -> first maximum 0.01. Tested on pairs 0,1: 0<0.01 same ok, 2 !< 0.01 ok.
    np.testing.assert_allclose(res.thresholds, [0.01, 0.01])
    np.testing.assert_array_equal(res.accuracies, [1.0, 1.0])
    assert res.auc == 1.0
    # all-wrong embeddings: genuine far, impostor near
    res = evaluate_distances([4.0, 0.0, 3.9, 0.1], [True, False, True, False], n_folds=2)
    # training acc at threshold 0 is 0.5 (all "different"), never better -> threshold 0
    np.testing.assert_array_equal(res.thresholds, [0.0, 0.0])
    np.testing.assert_array_equal(res.accuracies, [0.5, 0.5])
    assert res.auc == 0.0


def test_distance_equals_threshold_is_not_same():
    # predict "same" only when dist < threshold (strict), as np.less
    res = evaluate_distances([0.5, 0.7, 0.5, 0.7], [True, False, True, False], n_folds=2)
    # training fold (one 0.5 same, one 0.7 diff): threshold 0.50 calls the genuine pair
    # "different"; 0.51..0.70 all give accuracy 1, and the first maximum is 0.51
    grid = np.arange(0, 4, 0.01)
    np.testing.assert_array_equal(res.thresholds, [grid[51], grid[51]])
    np.testing.assert_array_equal(res.accuracies, [1.0, 1.0])


def test_val_far_hand_case():
    # 2 folds x 1,000 impostors + 100 genuine. FAR 1e-3 on a training fold = 1 false accept.
    rng = np.random.default_rng(5)
    d_diff = np.sort(rng.uniform(1.0, 3.0, size=2000))
    d_same = rng.uniform(0.0, 0.5, size=200)
    dist = np.concatenate([d_same[:100], d_diff[:1000], d_same[100:], d_diff[1000:]])
    same = np.r_[np.ones(100, bool), np.zeros(1000, bool), np.ones(100, bool), np.zeros(1000, bool)]
    res = evaluate_distances(dist, same, n_folds=2)
    assert res.tar_at_far == 1.0  # every genuine distance is below every impostor's
    assert np.isnan(res.tar_at_far_1e4) and any("1e-4" in n for n in res.notes)
    assert res.auc == 1.0


def test_too_few_pairs_and_bad_shapes():
    with pytest.raises(MetricError, match="cannot be split"):
        evaluate_distances([0.1, 0.2, 0.3], [True, False, True], n_folds=10)
    with pytest.raises(MetricError, match="do not pair up"):
        evaluate_pairs(np.ones((3, 2)), np.ones((4, 2)), [True] * 3)


def test_fold_ids_kfold_semantics():
    ids = fold_ids(23, 10)
    assert np.bincount(ids).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert (np.diff(ids) >= 0).all()


def test_explicit_folds_match_kfold():
    rng = np.random.default_rng(9)
    dist = rng.uniform(0, 4, 300)
    same = dist + rng.normal(0, 1, 300) < 2
    a = evaluate_distances(dist, same, n_folds=10)
    b = evaluate_distances(dist, same, folds=np.repeat(np.arange(10) * 7, 30))
    np.testing.assert_array_equal(a.accuracies, b.accuracies)
    assert a.tar_at_far == b.tar_at_far


def test_tar_at_1e4_reported_with_enough_impostors():
    rng = np.random.default_rng(3)
    n = 24_000
    same = np.zeros(n, bool)
    same[::8] = True
    dist = np.where(same, rng.uniform(0, 1.2, n), rng.uniform(0.8, 4, n))
    res = evaluate_distances(dist, same, n_folds=2)
    assert np.isfinite(res.tar_at_far_1e4) and res.tar_at_far_1e4 <= res.tar_at_far


# --------------------------------------------------------------------------- .bin packs


def test_bin_round_trip(tmp_path):
    imgs = [bytes([i]) * 5 for i in range(6)]
    write_bin(tmp_path / "x.bin", imgs, [True, False, True])
    assert read_bin(tmp_path / "x.bin") == (imgs, [True, False, True])
    assert not [p for p in tmp_path.iterdir() if p.name != "x.bin"]  # no temporary left over


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_bin_numpy_arrays(tmp_path, protocol):
    arr = [np.frombuffer(b"\xff\xd8\xff" + bytes([i]), dtype=np.uint8) for i in range(4)]
    (tmp_path / "x.bin").write_bytes(pickle.dumps((arr, np.array([True, False])), protocol=protocol))
    imgs, same = read_bin(tmp_path / "x.bin")
    assert imgs == [a.tobytes() for a in arr] and same == [True, False]


def test_bin_python2_strings(tmp_path):
    # protocol 2 as Python 2 wrote it: SHORT_BINSTRING (U) items with non-ASCII bytes
    data = b"\x80\x02(]q\x00(U\x03\xff\xd8aU\x01be]q\x01\x88at."
    (tmp_path / "py2.bin").write_bytes(data)
    assert read_bin(tmp_path / "py2.bin") == ([b"\xff\xd8a", b"b"], [True])


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_bin_refuses_code(tmp_path):
    target = tmp_path / "pwned"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([_Payload(target), b"x"], [True])))
    with pytest.raises(DatasetError, match=r"evil\.bin: refused.*system"):
        read_bin(tmp_path / "evil.bin")
    assert not target.exists()
    # builtins.eval through protocol 0 text opcodes too
    (tmp_path / "eval.bin").write_bytes(b"cbuiltins\neval\n(Vprint(1)\ntR.")
    with pytest.raises(DatasetError, match="builtins.eval"):
        read_bin(tmp_path / "eval.bin")


@pytest.mark.parametrize("content,match", [
    (pickle.dumps(([b"a", b"b"], [True]))[:-4], "truncated or corrupt"),
    (b"", "empty"),
    (b"not a pickle at all", "corrupt"),
    (pickle.dumps([b"a", b"b", b"c"]), "2-tuple"),
    (pickle.dumps(([b"a", b"b", b"c"], [True])), "3 images for 1 pairs"),
    (pickle.dumps(([b"a", 5], [True])), "image 1 is a int"),
    (pickle.dumps(([b"a", b"b"], ["yes"])), "issame"),
])
def test_bin_corrupt(tmp_path, content, match):
    (tmp_path / "bad.bin").write_bytes(content)
    with pytest.raises(DatasetError, match=match):
        read_bin(tmp_path / "bad.bin")


# --------------------------------------------------------------------------- embedding + readers

import cv2  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from fsbench.api import Embedder  # noqa: E402
from fsbench.data.images import encode_image  # noqa: E402
from fsbench.data.pairs import open_pairs, read_lfw_pairs, read_pairs_csv  # noqa: E402
from fsbench.plugins.metrics.verification import VerificationMetric  # noqa: E402
from fsbench.verification import embed_pairset, prepare_image, verify_embedder  # noqa: E402


class ProjEmbedder(Embedder):
    """A fixed random projection of 16x16 thumbnails: deterministic, fast, not mirror-symmetric."""

    name = "proj"
    dim = 8
    input_size = (16, 16)

    def __init__(self, option=None):
        super().__init__(option)
        self.w = np.random.default_rng(0).normal(size=(16 * 16 * 3, self.dim))
        self.calls = []

    def embed(self, images):
        self.calls.append(images.shape)
        thumbs = np.stack([cv2.resize(im, (16, 16), interpolation=cv2.INTER_AREA) for im in images])
        out = (thumbs.reshape(len(images), -1) / 255.0 - 0.5) @ self.w
        return normalize(out).astype(np.float32)


def _faces(n_ids=6, per_id=4, side=40, seed=0):
    """{identity: [uint8 (side, side, 3) images]}: a base pattern per identity plus noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(n_ids):
        base = rng.integers(0, 256, size=(side, side, 3))
        out[f"id{k}"] = [np.clip(base + rng.normal(0, 60, base.shape), 0, 255).astype(np.uint8)
                         for _ in range(per_id)]
    return out


def _pairs(n_ids=6, per_id=4):
    """Genuine and impostor (identity, index) pairs, alternating, 20 of each."""
    rng = np.random.default_rng(1)
    pairs = []
    for _k in range(20):
        a = int(rng.integers(n_ids))
        i, j = rng.choice(per_id, 2, replace=False)
        b = (a + 1 + int(rng.integers(n_ids - 1))) % n_ids
        pairs.append((f"id{a}", int(i), f"id{a}", int(j), True))
        pairs.append((f"id{a}", int(i), f"id{b}", int(j), False))
    return pairs


@pytest.fixture
def bench(tmp_path):
    faces = _faces()
    blobs, same = [], []
    for a, i, b, j, s in _pairs():
        blobs += [encode_image(faces[a][i], ".png"), encode_image(faces[b][j], ".png")]
        same.append(s)
    write_bin(tmp_path / "toy.bin", blobs, same)
    return tmp_path / "toy.bin", faces


def test_prepare_image_resize_rule():
    img = np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8)
    np.testing.assert_array_equal(prepare_image(img), cv2.resize(img, (112, 112), interpolation=cv2.INTER_AREA))
    tall = np.zeros((120, 100, 3), np.uint8)
    assert prepare_image(tall).shape == (134, 112, 3)  # short side 112, the other 112*120//100
    same = np.zeros((130, 112, 3), np.uint8)
    assert prepare_image(same) is same  # width already 112: untouched, as insightface


def test_verify_embedder_flip_sum_and_protocol(bench):
    path, faces = bench
    pairset = open_pairs(path)
    emb = ProjEmbedder()
    res = verify_embedder(emb, pairset, flip=True, n_folds=4, batch_size=16)
    # the same numbers by hand: embed(x) + embed(mirror x) per image, normalised, then the protocol
    imgs = np.stack([cv2.resize(pairset.load(i), (112, 112), interpolation=cv2.INTER_AREA)
                     for i in range(len(pairset.images))])
    e = normalize(emb.embed(imgs) + emb.embed(imgs[:, :, ::-1]))
    ref = evaluate_pairs(e[0::2], e[1::2], pairset.issame, n_folds=4)
    np.testing.assert_array_equal(res.accuracies, ref.accuracies)
    assert res.pairs == 40 and res.accuracy >= 0.75  # the toy identities are easy-ish
    no_flip = verify_embedder(emb, pairset, flip=False, n_folds=4)
    e0 = normalize(emb.embed(imgs))
    assert no_flip.accuracy == evaluate_pairs(e0[0::2], e0[1::2], pairset.issame, n_folds=4).accuracy
    vecs, failures = embed_pairset(emb, pairset, flip=True, batch_size=7)
    np.testing.assert_allclose(vecs, e, atol=1e-5)
    assert failures == 0


def _write_folder(root, faces):
    for ident, imgs in faces.items():
        (root / ident).mkdir(parents=True, exist_ok=True)
        for k, im in enumerate(imgs, start=1):
            (root / ident / f"{ident}_{k:04d}.jpg").write_bytes(encode_image(im, ".jpg"))


def test_lfw_pairs_txt(tmp_path):
    faces = _faces()
    _write_folder(tmp_path / "lfw", faces)
    lines = ["2\t3"]
    for fold in range(2):
        lines += [f"id{fold}\t1\t{k}" for k in (2, 3, 4)]
        lines += [f"id{fold}\t1\tid{fold + 2}\t{k}" for k in (1, 2, 3)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    ps = read_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    assert len(ps) == 12 and ps.issame.tolist() == ([True] * 3 + [False] * 3) * 2
    assert ps.images[ps.index_a[0]] == tmp_path / "lfw/id0/id0_0001.jpg"
    assert ps.images[ps.index_b[4]] == tmp_path / "lfw/id2/id2_0002.jpg"
    assert len(ps.images) == len(set(ps.images))  # id0_0001 used 6 times, listed once
    res = verify_embedder(ProjEmbedder(), ps, n_folds=2)
    assert res.pairs == 12
    # a missing image: named, and counted
    (tmp_path / "lfw/id0/id0_0003.jpg").unlink()
    (tmp_path / "lfw/id3/id3_0002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"id0_0003\.jpg: missing image named by .*pairs\.txt \(2 of the"):
        read_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    (tmp_path / "bad.txt").write_text("2\t3\nid0\t1\n")
    with pytest.raises(DatasetError, match="header promises 12 pairs"):
        read_lfw_pairs(tmp_path / "bad.txt", tmp_path / "lfw")


def test_pairs_csv(tmp_path):
    faces = _faces()
    _write_folder(tmp_path / "imgs", faces)
    rows = [(f"{a}/{a}_{i + 1:04d}.jpg", f"{b}/{b}_{j + 1:04d}.jpg", int(s)) for a, i, b, j, s in _pairs()]
    with open(tmp_path / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path_a", "path_b", "same", "fold"])
        w.writerows([(*r, k // 10) for k, r in enumerate(rows)])
    ps = read_pairs_csv(tmp_path / "pairs.csv", tmp_path / "imgs")
    assert len(ps) == 40 and ps.folds.tolist() == [k // 10 for k in range(40)]
    res = verify_embedder(ProjEmbedder(), ps, n_folds=10)  # folds come from the column
    assert res.folds == 4 and any("fold' column" in n for n in res.notes)
    (tmp_path / "bad.csv").write_text("path_a,path_b,same\nid0/id0_0001.jpg,id0/id0_0002.jpg,maybe\n")
    with pytest.raises(DatasetError, match="row 2: 'same' is 'maybe'"):
        read_pairs_csv(tmp_path / "bad.csv", tmp_path / "imgs")
    (tmp_path / "cols.csv").write_text("a,b,same\nx,y,1\n")
    with pytest.raises(DatasetError, match="missing column"):
        read_pairs_csv(tmp_path / "cols.csv", tmp_path / "imgs")
    (tmp_path / "gone.csv").write_text("path_a,path_b,same\nid0/id0_0001.jpg,nobody/x.jpg,0\n")
    with pytest.raises(DatasetError, match=r"nobody/x\.jpg: missing image .*\(1 of the 2"):
        read_pairs_csv(tmp_path / "gone.csv", tmp_path / "imgs")


def test_metric_plugin(bench, tmp_path):
    from fsbench.evaluation import EvalContext
    from fsbench.registry import Registry

    path, _ = bench
    other = tmp_path / "sub" / "toy.bin"
    other.parent.mkdir()
    other.write_bytes(path.read_bytes())
    ctx = EvalContext(None, embedder=ProjEmbedder(), benchmarks=[path, other],
                      registry=Registry(entry_points=False), use_cache=False)
    res = VerificationMetric(folds="4", flip="true").compute(ctx)
    direct = verify_embedder(ProjEmbedder(), open_pairs(path), n_folds=4)
    assert res.scalars["toy_acc"] == direct.accuracy and res.scalars["toy2_acc"] == direct.accuracy
    assert res.scalars["toy_tar@far1e-3"] == direct.tar_at_far
    assert res.scalars["mean"] == direct.accuracy
    assert res.per_item["bench"].tolist() == ["toy", "toy2"] and res.per_item["pairs"].tolist() == [40, 40]


def _run(args):
    from fsbench.cli import get_cli

    return CliRunner().invoke(get_cli(), args, catch_exceptions=False)


def test_verify_command(bench, tmp_path):
    path, _ = bench
    r = _run(["verify", "--bench", str(path), "--embedder", "pixels:8", "--folds", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["pairs"] == 40 and out["folds"] == 3 and out["flip"] is True and len(out["thresholds"]) == 3
    assert out["fold_sizes"] == [14, 13, 13] and 0 <= out["accuracy"] <= 1
    assert {"std", "tar_at_far", "far", "auc", "bench", "embedder"} <= set(out)
    r = _run(["verify", "--bench", str(path), "--embedder", "pixels:8", "--no-flip"])
    assert r.exit_code == 0 and "accuracy" in r.stdout
    (tmp_path / "bad.bin").write_bytes(b"\x80\x04garbage")
    r = _run(["verify", "--bench", str(tmp_path / "bad.bin"), "--embedder", "pixels:8"])
    assert r.exit_code == 2 and "bad.bin" in r.stderr and "Traceback" not in r.output
    r = _run(["verify", "--bench", str(path), "--pairs", "x.csv", "--embedder", "pixels"])
    assert r.exit_code == 2 and "exactly one of" in r.stderr


def test_bin_old_numpy_module_names(tmp_path):
    # packs written with numpy < 2 name numpy.core.multiarray (GLOBAL opcode: plain text, no length)
    arr = [np.frombuffer(b"\xff\xd8\xff\x01", dtype=np.uint8), np.frombuffer(b"\xff\xd8\xff\x02", dtype=np.uint8)]
    data = pickle.dumps((arr, [False]), protocol=2)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != data
    (tmp_path / "old.bin").write_bytes(old)
    assert read_bin(tmp_path / "old.bin") == ([a.tobytes() for a in arr], [False])

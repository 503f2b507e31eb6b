"""The default judge: the shipped IResNet, its recipe, and who judges when no --embedder is given."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fsbench.data import FaceDataset
from fsbench.errors import UsageError
from fsbench.evaluation import EvalContext
from fsbench.judge import JUDGE_WORLD_SEED, benchmark_info, default_embedder
from fsbench.plugins.embedders.judge import BACKBONE, RECIPE, WEIGHTS_DIR, JudgeEmbedder


@pytest.fixture(autouse=True)
def _no_user_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No FSBENCH_EMBEDDER and no config file of the person running the tests."""
    monkeypatch.delenv("FSBENCH_EMBEDDER", raising=False)
    monkeypatch.delenv("FSBENCH_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A tiny procedural world of another seed than the judge's (5, not 9001), with lfw_like pairs."""
    from click.testing import CliRunner

    from fsbench.cli import get_cli

    out = tmp_path_factory.mktemp("judge") / "world5"
    r = CliRunner().invoke(get_cli(), ["data", "make", "procedural", "--out", str(out), "--ids", "20", "--per-id", "4",
                                       "--seed", "5", "--benchmark", "--bench-pairs", "40", "--workers", "1"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


# --------------------------------------------------------------------------- the shipped weights


def test_shipped_weights_load_and_give_unit_vectors():
    weights = WEIGHTS_DIR / BACKBONE
    assert weights.is_file() and weights.stat().st_size < 5 * 2**20  # ships inside the package
    judge = JudgeEmbedder()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    out = judge.embed(images)
    assert out.shape == (5, judge.dim) and out.dtype == np.float32 and judge.dim == 128
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out, judge.embed(images))  # deterministic
    assert judge.input_size == (48, 48) and judge.resize == "bilinear-aa"


def test_weights_id_is_the_sha256_the_recipe_records():
    sha = hashlib.sha256((WEIGHTS_DIR / BACKBONE).read_bytes()).hexdigest()
    judge = JudgeEmbedder()
    assert judge.weights_id() == sha[:12]
    assert judge.cache_key() == f"judge-{judge.arch}-{sha[:12]}-bilinear-aa48"
    recipe = json.loads((WEIGHTS_DIR / RECIPE).read_text())
    assert recipe["weights_sha256"] == sha and recipe["weights_id"] == sha[:12]
    assert recipe["weights_bytes"] == (WEIGHTS_DIR / BACKBONE).stat().st_size
    assert recipe["world"]["seed"] == JUDGE_WORLD_SEED != 0  # generators train on seed 0
    assert recipe["world"]["generator"] == "procedural"
    assert any(c.startswith("fsbench fr train") for c in recipe["commands"])
    assert {"torch", "cpu_capability"} <= set(recipe["platform"]) and recipe["wall_seconds"]["total"] > 0
    assert 0.5 < recipe["verification"]["accuracy"] <= 1.0


def test_a_rebuilt_folder_is_a_judge_too(tmp_path):
    import shutil

    shutil.copyfile(WEIGHTS_DIR / BACKBONE, tmp_path / BACKBONE)
    copy = JudgeEmbedder(str(tmp_path))
    assert copy.cache_key() == JudgeEmbedder().cache_key()  # same weights anywhere, same space
    from fsbench.errors import CheckpointError

    with pytest.raises(CheckpointError, match="fsbench judge build"):
        JudgeEmbedder(str(tmp_path / "nothing"))


def test_judge_build_command_is_registered(cli):
    r = cli("judge", "build", "--help")
    assert r.exit_code == 0 and "--out" in r.stdout and "9001" in r.stdout
    info = cli.json("judge", "info")
    assert info["weights_id"] == JudgeEmbedder().weights_id()


# --------------------------------------------------------------------------- does it judge?


def _nearest_centre_accuracy(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out: each image against its identity's centre without it and every other centre."""
    n_classes = int(labels.max()) + 1
    sums = np.zeros((n_classes, vectors.shape[1]))
    np.add.at(sums, labels, vectors)
    counts = np.bincount(labels, minlength=n_classes)
    hits = 0
    for v, y in zip(vectors, labels, strict=True):
        centres = sums.copy()
        centres[y] -= v
        centres /= np.maximum(counts - (np.arange(n_classes) == y), 1)[:, None]
        centres /= np.linalg.norm(centres, axis=1, keepdims=True) + 1e-12
        hits += int(np.argmax(centres @ v) == y)
    return hits / len(labels)


def test_judge_separates_identities_better_than_pixels(world, cli, tmp_path):
    ds = FaceDataset.open(world)
    scores, sep = {}, {}
    for spec in ("judge", "pixels"):
        emb = EvalContext(ds, embedder=spec, use_cache=False).embeddings()
        scores[spec] = _nearest_centre_accuracy(emb.vectors, emb.labels)
        data = cli.json("evaluate", "--dataset", world, "--metrics", "sep", "--embedder", spec, "--out", tmp_path / spec)
        sep[spec] = data["metrics"]["sep"]["mean"]
    print(f"nearest-centre accuracy {scores}, SEP {sep}")
    assert scores["judge"] > scores["pixels"] + 0.2, scores
    assert scores["judge"] >= 0.45, scores  # 0.64 when written (pixels 0.20)
    assert sep["judge"] > sep["pixels"], sep


def test_evaluate_without_embedder_uses_the_judge_and_names_it(world, cli, tmp_path):
    r = cli("evaluate", "--dataset", world, "--metrics", "sep,cst", "--out", tmp_path / "e", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    judge = data["provenance"]["judge"]
    wid = JudgeEmbedder().weights_id()
    assert judge["spec"] == "judge" and judge["weights_id"] == wid and judge["default"] is True
    assert "embedded-world" in judge["reason"] and "procedural" in judge["reason"]
    assert data["provenance"]["embedder"] == "judge"
    assert wid in data["metrics"]["sep"]["space"] and wid in data["metrics"]["cst"]["space"]
    assert f"judge: judge (weights {wid})" in r.stderr
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["provenance"]["judge"]["weights_id"] == wid


def test_explicit_embedder_wins_and_is_named(world, cli, tmp_path):
    data = cli.json("evaluate", "--dataset", world, "--metrics", "cst", "--embedder", "pixels", "--out", tmp_path / "p")
    judge = data["provenance"]["judge"]
    assert judge["spec"] == "pixels" and judge["reason"] == "--embedder" and judge["default"] is False


def test_no_judge_when_no_metric_embeds(world, cli, tmp_path):
    data = cli.json("evaluate", "--dataset", world, "--metrics", "summary", "--out", tmp_path / "s")
    assert data["provenance"]["judge"] is None


def test_verify_a_world_benchmark_without_embedder_uses_the_judge(world, cli):
    bench = world / "benchmarks" / "lfw_like" / "lfw_like.bin"
    assert benchmark_info(bench)["generator"] == "procedural"
    r = cli("verify", "--bench", bench, "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["embedder"] == "judge" and data["judge"]["weights_id"] == JudgeEmbedder().weights_id()
    assert "judge: judge" in r.stderr


# --------------------------------------------------------------------------- who judges


def test_default_embedder_order(tmp_path, monkeypatch, world):
    procedural = FaceDataset.open(world).info
    assert procedural["generator"] == "procedural"
    spec, reason = default_embedder(procedural)
    assert spec == "judge" and "world seed 5" in reason
    assert default_embedder({"generator": "vigface", "embedded_world": True})[0] == "judge"
    assert default_embedder({"generator": "procedural", "config": {"seed": JUDGE_WORLD_SEED}})[1].count("caution") == 1

    # a config file beats the lineage
    config = tmp_path / "xdg" / "fsbench" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('embedder = "pixels"\n')
    spec, reason = default_embedder(procedural)
    assert spec == "pixels" and str(config) in reason
    # $FSBENCH_CONFIG names another file
    other = tmp_path / "other.toml"
    other.write_text('# mine\nembedder = "iresnet:/w/backbone.pth"\n')
    monkeypatch.setenv("FSBENCH_CONFIG", str(other))
    assert default_embedder(None) == ("iresnet:/w/backbone.pth", f'embedder = "iresnet:/w/backbone.pth" in {other}')
    # the environment beats the config file
    monkeypatch.setenv("FSBENCH_EMBEDDER", "dlib:aligned")
    assert default_embedder(procedural) == ("dlib:aligned", "FSBENCH_EMBEDDER=dlib:aligned (environment)")

    monkeypatch.delenv("FSBENCH_EMBEDDER")
    other.write_text("embedder = 3\n")
    with pytest.raises(UsageError, match="must be a non-empty string"):
        default_embedder(procedural)
    other.write_text("embedder = [\n")
    with pytest.raises(UsageError, match="unreadable config file"):
        default_embedder(procedural)
    monkeypatch.setenv("FSBENCH_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(UsageError, match="no such config file"):
        default_embedder(procedural)


def test_photographs_get_dlib(folder, world):
    plain = FaceDataset.open(folder("photos", ids=2, per_id=2, size=16))  # no dataset.json
    spec, reason = default_embedder(plain.info)
    assert spec == "dlib"
    assert "not embedded-world data" in reason and "says nothing about photographs" in reason
    assert default_embedder({"generator": "vigface"})[0] == "dlib"  # trained on real faces
    # a real reference puts the world's data in dlib's space too
    spec, reason = default_embedder(FaceDataset.open(world).info, [plain.info])
    assert spec == "dlib" and "reference" in reason
    # a real .bin (no bench.json beside it) has no lineage
    assert benchmark_info(Path(folder("lfw", ids=1, per_id=1)) / "lfw.bin") is None


def test_evaluate_on_a_plain_folder_chooses_dlib(folder):
    """Only the choice is checked here (dlib itself is tested in test_embedders)."""
    from fsbench.evaluate_run import _choose_judge
    from fsbench.registry import get_registry

    ds = FaceDataset.open(folder("plain", ids=2, per_id=2, size=16))
    metrics = {"sep": get_registry().metric("sep")}
    judge = _choose_judge(metrics, None, ds, None, [])
    assert judge["spec"] == "dlib" and "photographs" in judge["reason"] and judge["default"] is True
    assert _choose_judge({"summary": get_registry().metric("summary")}, None, ds, None, []) is None


def test_build_writes_weights_and_a_recipe_that_names_them(tmp_path, cli):
    """The rebuild path end to end, at toy scale (the shipped judge: 1,000 x 8, 10 epochs)."""
    from fsbench.plugins.embedders.judge import build_judge

    recipe = build_judge(tmp_path / "j", ids=6, per_id=2, bench_pairs=20, overrides={"epochs": 1, "batch_size": 4},
                         show_progress=False)
    sha = hashlib.sha256((tmp_path / "j" / BACKBONE).read_bytes()).hexdigest()
    assert recipe["weights_sha256"] == sha
    assert json.loads((tmp_path / "j" / RECIPE).read_text())["weights_sha256"] == sha
    assert recipe["world"]["seed"] == JUDGE_WORLD_SEED and recipe["world"]["images"] == 12
    assert 0.0 <= recipe["verification"]["accuracy"] <= 1.0 and recipe["training"]["steps"] >= 1
    assert JudgeEmbedder(str(tmp_path / "j")).weights_id() == sha[:12]
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == [BACKBONE, RECIPE]  # no temporaries left
    r = cli("judge", "build", "--out", tmp_path / "k", "--seed", "0")
    assert r.exit_code == 2 and "generators train on" in r.stderr

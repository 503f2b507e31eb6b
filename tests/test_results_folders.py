"""Results folders (the publishing issue, "A CLI that respects its users"): results are never
overwritten silently, and a metric that fails is not a success.

Real commands on a small procedural world: `evaluate`, `report`, `sweep` and `benchmark fr`
refuse an `--out` holding results (exit 2, one line naming the folder and --overwrite, the
files byte-identical); `--overwrite` replaces every file the earlier run listed in the
folder's manifest (a stale figure included) and leaves the user's own files alone; a failing
metric exits 1 with the others' results saved, 0 with --keep-going; `benchmark fr` re-run
with the same settings reuses its trained models.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import types
from pathlib import Path

import pytest
from conftest import run_cli

import fsbench
from fsbench.api import Metric
from fsbench.errors import MetricError
from fsbench.results_folder import MANIFEST

EVAL = ("evaluate", "--embedder", "pixels")


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with the sha256 of its bytes (links: their target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            else:
                with open(path, "rb") as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def refused(result, folder: Path, as_json: bool = False) -> str:
    """Exit 2 and one `error:` line naming the folder and --overwrite."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(folder) in lines[0] and "--overwrite" in lines[0], lines[0]
    if as_json:
        assert json.loads(result.stdout) == {"error": lines[0].removeprefix("error: "), "exit_code": 2}
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """12 identities x 3 images, no masks: the smallest world every metric here accepts."""
    w = tmp_path_factory.mktemp("world") / "W"
    run_cli("data", "make", "procedural", "--out", w, "--ids", 12, "--per-id", 3, "--seed", 0, "--no-masks")
    return w


# --------------------------------------------------------------------------- evaluate


def test_evaluate_refuses_a_folder_with_results_and_changes_nothing(cli, world, tmp_path):
    out = tmp_path / "ev"
    first = cli(*EVAL, "--dataset", world, "--reference", world, "--metrics", "summary,iou", "--out", out)
    assert first.exit_code == 0, first.stderr
    assert (out / "iou_similarity_histograms.png").exists()
    listed = manifest(out)
    assert listed["command"] == "evaluate" and listed["complete"] is True
    assert set(listed["files"]) == set(snapshot(out)) - {MANIFEST}  # every file it wrote, figures included
    assert {"iou_similarity_histograms.png", "metrics.json", "per_identity.parquet"} <= set(listed["files"])
    assert "--out" in listed["argv"] and listed["options"]["metric_specs"] == "summary,iou"
    before = snapshot(out)

    refused(cli(*EVAL, "--dataset", world, "--metrics", "summary", "--out", out), out)
    refused(cli(*EVAL, "--dataset", world, "--metrics", "summary", "--out", out, "--json"), out, as_json=True)
    assert snapshot(out) == before
    # a usage error is still a usage error, before the folder is touched, --overwrite or not
    bad = cli(*EVAL, "--dataset", world, "--metrics", "nosuch", "--out", out, "--overwrite")
    assert bad.exit_code == 2 and "nosuch" in bad.stderr
    assert snapshot(out) == before


def test_overwrite_replaces_what_the_last_run_wrote_and_keeps_the_users_files(cli, world, tmp_path):
    out = tmp_path / "ev"
    assert cli(*EVAL, "--dataset", world, "--reference", world, "--metrics", "summary,iou", "--out", out).exit_code == 0
    first = set(manifest(out)["files"])
    assert "iou_similarity_histograms.png" in first
    (out / "notes.md").write_text("my notes\n")
    (out / "mine").mkdir()
    (out / "mine" / "figure.png").write_bytes(b"the user's figure")
    old = (out / "metrics.json").read_bytes()

    second = cli(*EVAL, "--dataset", world, "--metrics", "summary", "--out", out, "--overwrite", "--json")
    assert second.exit_code == 0, second.stderr
    assert not (out / "iou_similarity_histograms.png").exists()  # the stale figure of the first run
    files = set(manifest(out)["files"])
    for stale in first - files:  # everything iou wrote, the figure among it
        assert not (out / stale).exists(), stale
    assert (out / "notes.md").read_text() == "my notes\n"
    assert (out / "mine" / "figure.png").read_bytes() == b"the user's figure"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert list(metrics) == ["summary"] and (out / "metrics.json").read_bytes() != old
    assert files == set(snapshot(out)) - {MANIFEST, "notes.md", "mine/figure.png"}  # not the user's files
    assert {"metrics.json", "per_identity.parquet"} <= files


def test_an_empty_folder_or_one_without_results_is_fine(cli, world, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(*EVAL, "--dataset", world, "--metrics", "summary", "--out", empty).exit_code == 0
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "readme.txt").write_text("keep me\n")
    assert cli(*EVAL, "--dataset", world, "--metrics", "summary", "--out", theirs).exit_code == 0
    assert (theirs / "readme.txt").read_text() == "keep me\n"
    assert "readme.txt" not in manifest(theirs)["files"]
    # results an older fsbench wrote (no manifest) count as results too
    (theirs / MANIFEST).unlink()
    refused(cli(*EVAL, "--dataset", world, "--metrics", "summary", "--out", theirs), theirs)


def test_evaluate_generator_keeps_its_samples_cache(cli, tmp_path):
    out = tmp_path / "gen"
    args = ("evaluate", "--generator", "procedural", "--ids", "3", "--per-id", "2", "--embedder", "pixels",
            "--metrics", "summary", "--out", out)
    assert cli(*args).exit_code == 0
    (samples,) = (out / "samples").iterdir()
    refused(cli(*args), out)
    again = cli(*args, "--overwrite")
    assert again.exit_code == 0, again.stderr
    assert list((out / "samples").iterdir()) == [samples] and (samples / "dataset.json").exists()
    assert "already sampled" in again.stderr  # reused, not drawn again
    assert not any(f.startswith("samples") for f in manifest(out)["files"])


# --------------------------------------------------------------------------- failing metrics


class Flaky(Metric):
    """A metric that is undefined for every dataset."""

    name = "flaky"
    needs = frozenset()

    def compute(self, ctx):
        raise MetricError("no luck with this dataset")


@pytest.fixture
def flaky(fresh_registry):
    plugin = types.SimpleNamespace(fsbench_register_metrics=fsbench.hookimpl(lambda: [Flaky],
                                                                              specname="fsbench_register_metrics"))
    fresh_registry.get_registry().register(plugin, name="flaky-plugin")


def test_a_failing_metric_exits_1_and_the_others_are_saved(cli, world, tmp_path, flaky):
    out = tmp_path / "ev"
    result = cli(*EVAL, "--dataset", world, "--metrics", "summary,flaky,cst", "--out", out, "--json")
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: 1 metric failed (flaky: ") and "no luck with this dataset" in lines[-1]
    assert str(out) in lines[-1] and "--keep-going" in lines[-1]
    printed = json.loads(result.stdout)  # still exactly one JSON object on stdout
    saved = json.loads((out / "metrics.json").read_text())["metrics"]
    assert printed["metrics"] == saved
    assert saved["summary"]["images"] == 36 and saved["cst"]["mean"] is not None
    assert "no luck with this dataset" in saved["flaky"]["error"]
    assert manifest(out)["complete"] is True


def test_keep_going_exits_0_with_a_warning(cli, world, tmp_path, flaky):
    out = tmp_path / "ev"
    result = cli(*EVAL, "--dataset", world, "--metrics", "summary,flaky", "--out", out, "--keep-going")
    assert result.exit_code == 0, result.stderr
    warning = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "flaky" in warning[0] and "no luck" in warning[0]
    assert "error" in json.loads((out / "metrics.json").read_text())["metrics"]["flaky"]


def test_sweep_refuses_overwrites_and_counts_failed_metrics(cli, tmp_path, flaky):
    out = tmp_path / "sw"
    args = ("sweep", "procedural", "--ids", "3", "--per-id", "2", "--embedder", "pixels", "--out", out)
    first = cli(*args, "--vary", "yaw_sd=4,8", "--metrics", "summary")
    assert first.exit_code == 0, first.stderr
    files = manifest(out)["files"]
    assert {"yaw_sd=4/metrics.json", "yaw_sd=8/metrics.json", "sweep.png", "sweep.svg"} <= set(files)
    assert not any("/samples/" in f for f in files)  # the samples are a cache, not results
    svg = (out / "sweep.svg").read_text()  # Table 1 as lines: every numeric row against the value
    assert "yaw_sd" in svg and "summary." in svg
    before = snapshot(out)
    refused(cli(*args, "--vary", "yaw_sd=4", "--metrics", "summary"), out)
    assert snapshot(out) == before

    failing = cli(*args, "--vary", "yaw_sd=4", "--metrics", "summary,flaky", "--overwrite", "--json")
    assert failing.exit_code == 1 and "flaky at yaw_sd=4" in failing.stderr
    assert json.loads(failing.stdout)["errors"] == {"4": {"flaky": "undefined: no luck with this dataset"}}
    assert not (out / "yaw_sd=8" / "metrics.json").exists()  # the first sweep's other value: stale
    assert (out / "yaw_sd=8" / "samples").is_dir()  # ... but its samples are a cache, kept
    assert (out / "yaw_sd=4" / "metrics.json").exists()
    ok = cli(*args, "--vary", "yaw_sd=4", "--metrics", "summary,flaky", "--overwrite", "--keep-going")
    assert ok.exit_code == 0 and "warning:" in ok.stderr


# --------------------------------------------------------------------------- report


def test_report_refuses_and_overwrite_removes_its_stale_files(cli, world, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, "0"), (b, "1")):
        assert cli(*EVAL, "--dataset", world, "--metrics", "summary,cst,sep", "--seed", seed, "--out", out).exit_code == 0
    rep = tmp_path / "rep"
    assert cli("report", a, b, "--out", rep).exit_code == 0
    first = set(manifest(rep)["files"])
    assert {"report.md", "results.csv"} <= first
    (rep / "my-notes.md").write_text("mine\n")
    before = snapshot(rep)
    refused(cli("report", a, b, "--out", rep), rep)
    assert snapshot(rep) == before

    assert cli("report", a, "--out", rep, "--overwrite").exit_code == 0  # one row: no comparison figure
    second = set(manifest(rep)["files"])
    for stale in first - second:
        assert not (rep / stale).exists(), stale
    assert first - second  # the first report's figure(s), which one row does not draw
    assert (rep / "my-notes.md").read_text() == "mine\n"


# --------------------------------------------------------------------------- benchmark fr

TINY_FR = {"network": "r4", "width": 8, "input_size": 32, "embedding_size": 32, "batch_size": 8, "epochs": 1,
           "lr_steps": "1", "warmup_steps": 1, "workers": 0}


@pytest.fixture(scope="module")
def fr_data(tmp_path_factory, world) -> tuple[Path, Path, Path]:
    """The real world with a 20-pair benchmark, and a 'synthetic' set (another seed)."""
    root = tmp_path_factory.mktemp("fr")
    real, syn = root / "real", root / "syn"
    run_cli("data", "make", "procedural", "--out", real, "--ids", 12, "--per-id", 3, "--seed", 0, "--no-masks",
            "--benchmark", "--bench-pairs", 20)
    run_cli("data", "make", "procedural", "--out", syn, "--ids", 12, "--per-id", 3, "--seed", 1, "--no-masks")
    return real, syn, real / "benchmarks" / "lfw_like" / "lfw_like.bin"


def test_benchmark_fr_keeps_its_models_and_reuses_them(cli, fr_data, tmp_path, one_torch_thread):
    real, syn, bench = fr_data
    out = tmp_path / "bench"
    def fr(*more, folds=2):
        return cli("benchmark", "fr", "--train", syn, "--baseline", real, "--bench", bench, "--folds", folds,
                   "--out", out, *sum((["-o", f"{k}={v}"] for k, v in TINY_FR.items()), []), *more)

    t0 = time.perf_counter()
    first = fr("--json")
    t_first = time.perf_counter() - t0
    assert first.exit_code == 0, first.stderr
    rows = json.loads(first.stdout)["rows"]
    assert [r["reused"] for r in rows] == [False, False]
    for r in rows:  # each model kept under --out, keyed by its data and config
        run = Path(r["run_dir"])
        assert run.parent == out / "runs" and (run / "backbone.pth").exists()
    assert "reused" not in first.stderr

    t0 = time.perf_counter()
    again = fr("--json")
    t_again = time.perf_counter() - t0
    assert again.exit_code == 0, again.stderr
    rows_again = json.loads(again.stdout)["rows"]
    assert [r["reused"] for r in rows_again] == [True, True]
    assert [r["lfw_like"] for r in rows_again] == [r["lfw_like"] for r in rows]
    assert again.stderr.count("reused the finished training") == 2
    assert t_again < t_first / 2, (t_first, t_again)
    files = manifest(out)["files"]
    assert "fr_benchmark.csv" in files and any(f.endswith("/backbone.pth") for f in files)

    # other settings: refused, then --overwrite trains again and keeps the user's file
    (out / "runs" / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    refused(fr(folds=5), out)
    assert snapshot(out) == before
    retrained = fr("--overwrite", "--json")
    assert retrained.exit_code == 0, retrained.stderr
    assert [r["reused"] for r in json.loads(retrained.stdout)["rows"]] == [False, False]
    assert (out / "runs" / "notes.txt").read_text() == "mine\n"

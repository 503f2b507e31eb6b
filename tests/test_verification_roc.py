"""The verification metric saves its ROC points (verification_roc.csv: bench, threshold, fpr,
tpr) into the evaluation folder, and `fsbench report` draws the ROC figure from them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fsbench.plugins.metrics.verification import ROC_FILE, ROC_POINTS, roc_points


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from click.testing import CliRunner

    from fsbench.cli import get_cli

    out = tmp_path_factory.mktemp("roc") / "w"
    r = CliRunner().invoke(get_cli(), ["data", "make", "procedural", "--out", str(out), "--ids", "4", "--per-id", "3",
                                       "--size", "32", "--no-masks", "--benchmark", "--bench-pairs", "40",
                                       "--workers", "1", "--json"])
    assert r.exit_code == 0, r.output
    return out


def test_roc_points_keeps_the_curve_in_at_most_200_points():
    rng = np.random.default_rng(0)
    thresholds = np.arange(0, 4, 0.01)
    fpr = np.sort(rng.uniform(0, 1, 400))
    tpr = np.sort(rng.uniform(0, 1, 400))
    f, t, th = roc_points(fpr, tpr, thresholds)
    assert len(f) == ROC_POINTS and f[0] == fpr[0] and f[-1] == fpr[-1] and t[-1] == tpr[-1]
    assert (np.diff(th) > 0).all() and (np.diff(f) >= 0).all() and (np.diff(t) >= 0).all()
    flat = np.r_[np.zeros(100), np.linspace(0, 1, 50), np.ones(250)]  # repeats at both ends dropped
    f, t, th = roc_points(flat, flat, thresholds)
    assert len(f) == 50 and th[0] == 0 and f[-1] == 1 and np.isclose(th[-1], 1.49)


def test_evaluate_saves_roc_points_and_report_draws_them(cli, world, tmp_path):
    benches = [world / "benchmarks" / name / f"{name}.bin" for name in ("lfw_like", "cfp_fp_like")]
    ev = tmp_path / "ev"
    out = cli.json("evaluate", "--dataset", world, "--metrics", "verification", "--bench", benches[0],
                   "--bench", benches[1], "--embedder", "pixels:8", "--out", ev)
    assert out["metrics"]["verification"]["lfw_like_acc"] is not None
    table = pd.read_csv(ev / ROC_FILE)
    assert list(table.columns) == ["bench", "threshold", "fpr", "tpr"]
    assert table["bench"].unique().tolist() == ["lfw_like", "cfp_fp_like"]
    for _bench, part in table.groupby("bench", sort=False):
        assert 2 <= len(part) <= ROC_POINTS
        for col in ("threshold", "fpr", "tpr"):
            values = part[col].to_numpy()
            assert np.isfinite(values).all() and (np.diff(values) >= 0).all(), col  # monotone with the threshold
        assert part[["fpr", "tpr"]].to_numpy().min() >= 0 and part[["fpr", "tpr"]].to_numpy().max() <= 1
        assert (part["fpr"].iloc[0], part["tpr"].iloc[0]) == (0.0, 0.0)  # threshold 0 accepts no pair
    assert not [p for p in ev.iterdir() if ".tmp-" in p.name]  # written atomically, nothing left behind

    manifest = json.loads((ev / ".fsbench-results.json").read_text())
    assert ROC_FILE in json.dumps(manifest)  # a result of the run: --overwrite removes it

    report = cli.json("report", ev, "--out", tmp_path / "rep")
    assert str(tmp_path / "rep" / "roc.png") in report["figures"]
    assert (tmp_path / "rep" / "roc.png").stat().st_size > 0
    assert not [s for s in report["skipped_figures"] if s.startswith("ROC")]

"""The demo end to end at toy scale: every stage runs, the report holds what the README says."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsbench.demo import run_demo


def test_demo_end_to_end_and_rerun_reuses(tmp_path: Path) -> None:
    kwargs = dict(ids=4, per_id=3, seed=0, train_ids=12, train_per_id=3, bench_pairs=60,
                  fr_overrides={"epochs": 2, "batch_size": 16, "workers": 0})
    report = run_demo(tmp_path / "demo", **kwargs)
    frame = report.frame
    assert list(frame.index) == ["real", "synthetic-default", "synthetic-low-diversity"]
    # the identity metrics are measured with the FR model the demo trained, not a stand-in
    assert "iresnet" in report.spaces["cst"]
    assert report.spaces["fd"].startswith("pixels")
    for column in ("cst.mean", "div.mean", "sep.mean"):
        assert np.isfinite(frame[column]).all(), column
    # verification only for the real set (it carries the benchmarks), against-real only for synthetic
    assert np.isfinite(frame.loc["real", "verification.mean"])
    assert 0.0 <= frame.loc["real", "verification.mean"] <= 1.0
    assert np.isnan(frame.loc["real", "fd.fd"])
    assert np.isfinite(frame.loc[["synthetic-default", "synthetic-low-diversity"], "fd.fd"]).all()
    assert report.markdown.read_text().count("synthetic-low-diversity") >= 1
    for name in ("real", "synthetic-default", "synthetic-low-diversity"):
        assert (tmp_path / "demo" / f"sheet-{name}.png").stat().st_size > 0
    # the FR model's numbers depend on torch's CPU kernels: the record says which ran
    import json

    import torch

    prov = json.loads((tmp_path / "demo" / "eval" / "real" / "metrics.json").read_text())["provenance"]
    assert prov["platform"]["torch"] == torch.__version__
    assert prov["platform"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    log = tmp_path / "demo" / "fr" / "metrics.jsonl"
    steps = log.read_text().count("\n")
    assert steps > 0
    again = run_demo(tmp_path / "demo", **kwargs)  # resumes: the finished training run is reused
    assert log.read_text().count("\n") == steps
    assert again.frame.loc["real", "cst.mean"] == frame.loc["real", "cst.mean"]

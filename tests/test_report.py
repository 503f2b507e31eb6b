"""`report` across evaluations: columns keyed by metric x feature space, the same headline
cells as `evaluate`, in the order of --metrics, prdc as four numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fsbench.evaluate_run import run_evaluation
from fsbench.report.compare import write_report
from fsbench.report.headline import format_value


def cst_by_hand(root: Path, side: int) -> float:
    """VIGFace's CST in the pixels:<side> space: per identity the mean cosine over all
    ordered pairs (diagonal included), then the mean over identities."""
    from fsbench.data import FaceDataset
    from fsbench.plugins.embedders.pixels import PixelEmbedder

    ds = FaceDataset.open(root)
    v = PixelEmbedder(str(side)).embed(np.stack([ds.read(i) for i in range(len(ds))])).astype(np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = np.array([item.label for item in ds.items])
    return float(np.mean([(v[labels == c] @ v[labels == c].T).mean() for c in np.unique(labels)]))


def test_report_never_mixes_feature_spaces_in_one_column(folder, tmp_path):
    a, b = folder("a", ids=3, per_id=4, size=16, seed=0), folder("b", ids=3, per_id=4, size=16, seed=1)
    runs = {
        "a-px2": (a, "pixels:2"),
        "a-px4": (a, "pixels:4"),
        "b-px2": (b, "pixels:2"),
    }
    for name, (root, embedder) in runs.items():
        run_evaluation(dataset_dir=root, metric_specs="cst,summary", embedder=embedder, out_dir=tmp_path / name)
    report = write_report([tmp_path / n for n in runs], tmp_path / "rep")
    frame = report.frame

    # cst was scored in two spaces: one column group each, in first-seen order; summary has no space
    assert list(frame.columns[:4]) == ["cst [pixels-2-none].mean", "cst [pixels-2-none].std",
                                       "cst [pixels-2-none].n_identities", "cst [pixels-2-none].n_excluded"]
    assert "cst [pixels-4-none].mean" in frame.columns and "cst.mean" not in frame.columns
    assert report.spaces == {"cst [pixels-2-none]": "pixels-2-none", "cst [pixels-4-none]": "pixels-4-none"}
    px2, px4 = frame["cst [pixels-2-none].mean"], frame["cst [pixels-4-none].mean"]
    assert px2["a-px2"] == pytest.approx(cst_by_hand(a, 2), rel=1e-5)
    assert px2["b-px2"] == pytest.approx(cst_by_hand(b, 2), rel=1e-5)
    assert px4["a-px4"] == pytest.approx(cst_by_hand(a, 4), rel=1e-5)
    assert px2["a-px2"] != pytest.approx(px4["a-px4"], rel=1e-3)  # the two spaces give other numbers
    assert np.isnan(px2["a-px4"]) and np.isnan(px4["a-px2"]) and np.isnan(px4["b-px2"])
    assert frame["summary.images"].tolist() == [12.0, 12.0, 12.0]

    md = report.markdown.read_text()
    assert "| dataset | cst [pixels-2-none] ↑ | cst [pixels-4-none] ↑ | summary |" in md
    cell = format_value(px2["a-px2"], frame.at["a-px2", "cst [pixels-2-none].std"])
    assert f"| a-px2 | {cell} | - | 12 |" in md
    assert "- `pixels-2-none`: cst [pixels-2-none]" in md and "- `pixels-4-none`: cst [pixels-4-none]" in md
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(report.table())
    assert "cst [pixels-2-none]" in console.export_text()  # a header, not swallowed as rich markup

    # one space across all runs: the plain name, as before
    single = write_report([tmp_path / "a-px2", tmp_path / "b-px2"], tmp_path / "rep1")
    assert "cst.mean" in single.frame.columns and single.spaces == {"cst": "pixels-2-none"}


def test_report_takes_the_space_of_an_old_metrics_json_from_its_embedder(tmp_path):
    """A metrics.json written before results named their space: the run's embedder key
    (provenance) is the space of the metrics that score embeddings, and it still splits."""
    for name, key, value in (("old-a", "dlib-aligned-1234", 0.5), ("old-b", "pixels-2-none", 0.9)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({
            "metrics": {"cst": {"mean": value, "std": 0.1}, "summary": {"images": 8.0, "mean": 4.0, "std": 0.0}},
            "provenance": {"embedder_key": key},
        }))
    report = write_report([tmp_path / "old-a", tmp_path / "old-b"], tmp_path / "rep")
    assert report.frame.at["old-a", "cst [dlib-aligned-1234].mean"] == 0.5
    assert report.frame.at["old-b", "cst [pixels-2-none].mean"] == 0.9
    assert np.isnan(report.frame.at["old-a", "cst [pixels-2-none].mean"])
    assert report.frame["summary.images"].tolist() == [8.0, 8.0]  # no embeddings, no space: one column


def test_evaluate_and_report_show_the_same_cells_in_metrics_order(folder, tmp_path, cli):
    """prdc shows its four numbers; KID on two 40-image sets is one estimate without a ± std."""
    gen, real = folder("gen", ids=4, per_id=10, size=16, seed=0), folder("real", ids=5, per_id=8, size=16, seed=1)
    out = tmp_path / "ev"
    shown = cli("evaluate", "--dataset", gen, "--reference", real, "--features", "pixels:2",
                "--metrics", "prdc,summary,kid", "--out", out)
    assert shown.exit_code == 0, shown.stderr
    saved = json.loads((out / "metrics.json").read_text())["metrics"]
    assert list(saved) == ["prdc", "summary", "kid"]
    prdc, kid = saved["prdc"], saved["kid"]
    assert kid["std"] is None and kid["n_subsets"] == 1
    assert "subsets = whole set (n=40), no spread" in " ".join(kid["notes"])

    # evaluate's rows: prdc's four scalars, then summary's images, then KID's mean; in that order
    cells = [("precision", format_value(prdc["precision"])), ("recall", format_value(prdc["recall"])),
             ("density", format_value(prdc["density"])), ("coverage", format_value(prdc["coverage"])),
             ("images", "40"), ("mean", format_value(kid["mean"]))]
    lines = shown.stdout.splitlines()
    found = [next(i for i, ln in enumerate(lines) if f" {s} " in ln and f" {v} " in ln) for s, v in cells]
    assert found == sorted(found) and len(set(found)) == 6, shown.stdout
    assert "±" not in lines[found[-1]]

    report = write_report([out], tmp_path / "rep")
    md = report.markdown.read_text()
    assert ("| dataset | prdc.precision ↑ | prdc.recall ↑ | prdc.density ↑ | prdc.coverage ↑ | summary | kid ↓ |"
            in md)
    assert "| ev | " + " | ".join(v for _, v in cells) + " |" in md

"""Comparison reports: several evaluation folders -> one pandas table -> Markdown, CSV, figures.

The table has one row per evaluated dataset and one column per metric scalar
(``cst.mean``, ``sep.std``, ...). The Markdown shows ``mean ± std`` with an arrow saying
which way is better, and names the feature space under every distribution metric: an FID
without its feature space is not a number.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fsbench import ui
from fsbench.errors import UsageError


@dataclass
class Report:
    frame: pd.DataFrame  # rows: datasets; columns: "metric.scalar"
    spaces: dict[str, str]  # metric -> feature space
    markdown: Path
    csv: Path
    figures: list[Path]

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": json.loads(self.frame.reset_index().to_json(orient="records")),
            "spaces": self.spaces,
            "markdown": str(self.markdown),
            "csv": str(self.csv),
            "figures": [str(f) for f in self.figures],
        }

    def table(self):
        cols = _summary_columns(self.frame)
        rows = [[name, *(_pm(self.frame, name, m) for m in cols)] for name in self.frame.index]
        return ui.table("comparison", ["dataset", *cols], rows)


def load_results(runs: list[Path]) -> tuple[pd.DataFrame, dict[str, str], dict[str, Any]]:
    """Read each run's metrics.json into one frame (rows named after the run folders)."""
    rows, spaces, provenance = {}, {}, {}
    for run in runs:
        path = run / "metrics.json" if run.is_dir() else run
        if not path.exists():
            raise UsageError(f"{path}: no metrics.json (run `fsbench evaluate --out {run}` first)")
        try:
            data = json.loads(path.read_text())
            metrics = data["metrics"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}: not an fsbench metrics.json ({exc})") from None
        label = run.name if run.is_dir() else run.parent.name
        if label in rows:
            label = str(run)
        rows[label] = {
            f"{metric}.{key}": value
            for metric, scalars in metrics.items()
            for key, value in scalars.items()
            if key not in ("notes", "space", "error") and (value is None or isinstance(value, (int, float)))
        }
        spaces.update({m: s["space"] for m, s in metrics.items() if "space" in s})
        provenance[label] = data.get("provenance", {})
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index(axis=1)
    frame.index.name = "dataset"
    return frame, spaces, provenance


def _summary_columns(frame: pd.DataFrame) -> list[str]:
    """Metrics in first-seen order (the order of --metrics), once each."""
    return list(dict.fromkeys(c.rpartition(".")[0] for c in frame.columns))


def _pm(frame: pd.DataFrame, row: str, metric: str) -> str:
    """'mean ± std' for a metric with both, else its first scalar."""
    def get(key: str):
        col = f"{metric}.{key}"
        return frame.at[row, col] if col in frame.columns else None

    value, std = get("mean"), get("std")
    if value is None:
        scalars = [c for c in frame.columns if c.startswith(metric + ".")]
        value = frame.at[row, scalars[0]] if scalars else None
    if value is None or pd.isna(value):
        return "-"
    # 4 decimals, or scientific notation when the value itself is small (KID is ~1e-4)
    fmt = "{:.3e}" if 0 < abs(value) < 5e-3 else "{:.4f}"
    return f"{fmt.format(value)} ± {fmt.format(std)}" if std is not None and not pd.isna(std) else fmt.format(value)


def _markdown(frame: pd.DataFrame, spaces: dict[str, str], title: str, provenance: dict[str, Any]) -> str:
    from fsbench.registry import get_registry

    registry = get_registry()
    metrics = _summary_columns(frame)

    def header(metric: str) -> str:
        try:
            better = registry.get("metric", metric.partition(":")[0]).higher_is_better
        except UsageError:
            better = None
        return metric + {True: " ↑", False: " ↓", None: ""}[better]

    lines = [f"# {title}", "", "| dataset | " + " | ".join(header(m) for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for row in frame.index:
        lines.append(f"| {row} | " + " | ".join(_pm(frame, row, m) for m in metrics) + " |")
    lines += ["", "↑ higher is better, ↓ lower is better; values are mean ± std over identities (or folds).", ""]
    by_space: dict[str, list[str]] = {}
    for metric in metrics:
        if metric in spaces:
            by_space.setdefault(spaces[metric], []).append(metric)
    if by_space:
        lines += ["## Feature spaces", ""]
        lines += [f"- `{space}`: {', '.join(names)}" for space, names in by_space.items()]
        lines.append("")
    lines += ["## Provenance", ""]
    for row, prov in provenance.items():
        lines.append(
            f"- **{row}**: fsbench {prov.get('fsbench_version')} ({prov.get('git_commit')}), seed {prov.get('seed')}, "
            f"embedder `{prov.get('embedder')}`, dataset fingerprint `{(prov.get('dataset') or {}).get('fingerprint')}`, "
            f"{prov.get('created')}"
        )
    return "\n".join(lines) + "\n"


def write_report(runs: list[Path], out_dir: Path, title: str = "fsbench comparison") -> Report:
    frame, spaces, provenance = load_results(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    if {"cst.mean", "sep.mean"} <= set(frame.columns) and len(frame) >= 2:
        from fsbench.report.figures import plot_cst_sep

        fig_frame = pd.DataFrame({
            "dataset": frame.index,
            "cst": frame["cst.mean"].to_numpy(),
            "sep": frame["sep.mean"].to_numpy(),
            "div": frame["div.mean"].to_numpy() if "div.mean" in frame.columns else 1.0,
        })
        figures.append(plot_cst_sep(fig_frame, out_dir / "cst_sep.png"))
    md, csv = out_dir / "report.md", out_dir / "results.csv"
    _write_text(md, _markdown(frame, spaces, title, provenance))
    _write_text(csv, frame.to_csv())
    _write_text(out_dir / "provenance.json", json.dumps(provenance, indent=2, default=str) + "\n")
    return Report(frame, spaces, md, csv, figures)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)

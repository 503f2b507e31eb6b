"""Comparison reports: several evaluation folders -> one pandas table -> Markdown, CSV, figures.

The table has one row per evaluated dataset and one column per metric scalar
(``cst.mean``, ``sep.std``, ...), in the order the evaluations listed their metrics. The
Markdown shows each metric's headline scalars (`fsbench.report.headline`, the cells
`evaluate` shows too) with an arrow saying which way is better, and names the feature space
of every metric: an FID without its feature space is not a number.

Columns are keyed by metric x feature space, so numbers from two spaces never share one: a
metric scored in one space by every evaluation keeps its plain name (``cst.mean``, the space
listed under "Feature spaces"); scored in several, it gets one column group per space
(``cst [pixels-2-none].mean``, ``cst [pixels-4-none].mean``).
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
from fsbench.report.headline import Headline, arrow, headlines


@dataclass
class Report:
    frame: pd.DataFrame  # rows: datasets; columns: "metric.scalar" or "metric [space].scalar"
    spaces: dict[str, str]  # metric column ("cst" or "cst [space]") -> feature space
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
        from rich.markup import escape  # "cst [pixels-2-none]" is a header, not a rich style

        headers = [escape(header) for header, _ in _summary_columns(self.frame)]
        rows = [[escape(name), *(h.text() for h in _summary_cells(self.frame, name))] for name in self.frame.index]
        return ui.table("comparison", ["dataset", *headers], rows)


def load_results(runs: list[Path]) -> tuple[pd.DataFrame, dict[str, str], dict[str, Any]]:
    """Read each run's metrics.json into one frame (rows named after the run folders)."""
    found: dict[str, list[tuple[str, str | None, dict[str, Any]]]] = {}  # row -> (metric, space, scalars)
    provenance: dict[str, Any] = {}
    for run in runs:
        path = run / "metrics.json" if run.is_dir() else run
        if not path.exists():
            raise UsageError(f"{path}: no metrics.json (run `fsbench evaluate --out {run}` first)")
        try:
            data = json.loads(path.read_text())
            metrics = data["metrics"]
            prov = data.get("provenance") or {}
            results = []
            for metric, result in metrics.items():
                scalars = {
                    key: value for key, value in result.items()
                    if key not in ("notes", "space", "error") and (value is None or isinstance(value, (int, float)))
                }
                if scalars:  # a failed metric ({"error": ...}) has no column
                    results.append((metric, _space(metric, result, prov), scalars))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"{path}: not an fsbench metrics.json ({exc})") from None
        label = run.name if run.is_dir() else run.parent.name
        if label in found:
            label = str(run)
        found[label] = results
        provenance[label] = prov

    # metric -> space -> scalar names, each level in first-seen order (the order of --metrics)
    layout: dict[str, dict[str | None, dict[str, None]]] = {}
    for results in found.values():
        for metric, space, scalars in results:
            layout.setdefault(metric, {}).setdefault(space, {}).update(dict.fromkeys(scalars))

    def group(metric: str, space: str | None) -> str:
        return metric if len(layout[metric]) == 1 else f"{metric} [{space or 'no space recorded'}]"

    columns = [f"{group(m, sp)}.{k}" for m, by_space in layout.items() for sp, keys in by_space.items() for k in keys]
    spaces = {group(m, sp): sp for m, by_space in layout.items() for sp in by_space if sp}
    rows = [
        {f"{group(metric, space)}.{k}": v for metric, space, scalars in results for k, v in scalars.items()}
        for results in found.values()
    ]
    frame = pd.DataFrame(rows, index=list(found), columns=columns, dtype=float)
    frame.index.name = "dataset"
    return frame, spaces, provenance


def _space(metric: str, result: dict[str, Any], provenance: dict[str, Any]) -> str | None:
    """The feature space a result was computed in: its own record, else the run's embedder
    for a metric that scores embeddings (a metrics.json from before results named their space)."""
    if result.get("space"):
        return result["space"]
    from fsbench.registry import get_registry

    try:
        needs = get_registry().get("metric", metric.partition(":")[0]).needs
    except UsageError:
        return None
    return provenance.get("embedder_key") if "embeddings" in needs else None


def _groups(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Column group ("cst", "cst [space]") -> its scalar names, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for column in frame.columns:
        group, _, scalar = column.rpartition(".")  # scalar names hold no dot; spaces may
        groups.setdefault(group, []).append(scalar)
    return groups


def _cells(frame: pd.DataFrame, row: str, group: str, scalars: list[str]) -> list[Headline]:
    values = {k: frame.at[row, f"{group}.{k}"] for k in scalars}
    return headlines(group.partition(" [")[0], {k: (None if pd.isna(v) else float(v)) for k, v in values.items()})


def _summary_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(header, column group) of each shown cell: every metric's headline scalars, in first-seen
    order; a metric with several headline scalars (prdc) shows each as "prdc.recall"."""
    out = []
    for group, scalars in _groups(frame).items():
        shown = headlines(group.partition(" [")[0], dict.fromkeys(scalars))
        out += [(group if len(shown) == 1 else f"{group}.{h.scalar}", group) for h in shown]
    return out


def _summary_cells(frame: pd.DataFrame, row: str) -> list[Headline]:
    """The headline cells of one row, aligned with `_summary_columns`."""
    return [h for group, scalars in _groups(frame).items() for h in _cells(frame, row, group, scalars)]


def _markdown(frame: pd.DataFrame, spaces: dict[str, str], title: str, provenance: dict[str, Any]) -> str:
    columns = _summary_columns(frame)
    headers = [f"{header} {arrow(group.partition(' [')[0])}".rstrip() for header, group in columns]
    lines = [f"# {title}", "", "| dataset | " + " | ".join(headers) + " |", "|---|" + "---|" * len(columns)]
    for row in frame.index:
        lines.append(f"| {row} | " + " | ".join(h.text() for h in _summary_cells(frame, row)) + " |")
    lines += ["", "↑ higher is better, ↓ lower is better; values are mean ± std over identities (or folds, or KID subsets).", ""]
    by_space: dict[str, list[str]] = {}
    for group in _groups(frame):
        if group in spaces:
            by_space.setdefault(spaces[group], []).append(group)
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

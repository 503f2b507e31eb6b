"""Comparison reports: several evaluation folders -> one pandas table -> Markdown, CSV, figures.

The table has one row per evaluated dataset and one column per metric scalar
(``cst.mean``, ``sep.std``, ...), in the order the evaluations listed their metrics. The
Markdown shows each metric's headline scalars (`fsbench.report.headline`, the cells
`evaluate` shows too) with an arrow saying which way is better, and names the feature space
of every metric: an FID without its feature space is not a number.

Columns are keyed by metric x feature space, so numbers from two spaces never share one: a
metric scored in one space by every evaluation keeps its plain name (``cst.mean``, the space
listed under "Feature spaces"); scored in several, it gets one column group per space
(``cst [pixels-2-none].mean``, ``cst [pixels-4-none].mean``). Results of one metric with
other settings (``-o iou.bins=50``) are kept apart the same way (``iou [bins=50].mean``).

Every scalar that is a mean over identities (CST, SEP, DIV, ...: the evaluation's
``per_identity.parquet`` reproduces it) gets a bootstrap confidence interval over identities
(`fsbench.report.bootstrap`): columns ``cst.mean.ci_low`` and ``cst.mean.ci_high`` at the end
of its group, and ``0.6758 [0.6512, 0.7001]`` cells in the tables. `write_report` writes the
frame as CSV and Parquet, Markdown, a self-contained HTML page (`fsbench.report.html`), a
booktabs LaTeX table (`fsbench.report.latex`) and the figures (`fsbench.report.plots`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fsbench import ui
from fsbench.errors import UsageError
from fsbench.report.bootstrap import Bootstrap
from fsbench.report.headline import Headline, arrow, headlines
from fsbench.results_folder import ResultsFolder


@dataclass
class Report:
    frame: pd.DataFrame  # rows: datasets; columns: "metric.scalar" or "metric [space].scalar"
    spaces: dict[str, str]  # metric column ("cst" or "cst [space]") -> feature space
    markdown: Path
    csv: Path
    figures: list[Path]  # the PNGs
    parquet: Path | None = None
    html: Path | None = None
    latex: Path | None = None
    svgs: list[Path] = field(default_factory=list)
    skipped_figures: list[str] = field(default_factory=list)  # "why a figure is not there"
    bootstrap: Bootstrap | None = None
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # column group -> metric, space, settings

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": json.loads(self.frame.reset_index().to_json(orient="records")),
            "spaces": self.spaces,
            "markdown": str(self.markdown),
            "csv": str(self.csv),
            "figures": [str(f) for f in self.figures],
            "parquet": str(self.parquet) if self.parquet else None,
            "html": str(self.html) if self.html else None,
            "latex": str(self.latex) if self.latex else None,
            "svg": [str(f) for f in self.svgs],
            "skipped_figures": list(self.skipped_figures),
            "bootstrap": self.bootstrap.to_json() if self.bootstrap else None,
            "groups": self.groups,
        }

    def table(self):
        from rich.markup import escape  # "cst [pixels-2-none]" is a header, not a rich style

        headers = [escape(header) for header, _ in _summary_columns(self.frame)]
        rows = [[escape(name), *(h.text() for h in _summary_cells(self.frame, name))] for name in self.frame.index]
        return ui.table("comparison", ["dataset", *headers], rows)


@dataclass
class Results:
    """What `write_report` reads from the evaluation folders, before anything is written."""

    frame: pd.DataFrame  # rows: datasets; columns: "GROUP.scalar" (+ "GROUP.scalar.ci_low/high")
    spaces: dict[str, str]  # column group -> feature space
    provenance: dict[str, Any]  # row -> the evaluation's provenance
    folders: dict[str, Path]  # row -> evaluation folder
    groups: dict[str, dict[str, Any]]  # column group -> {"metric", "space", "settings"}
    bootstrap: Bootstrap | None = None  # how the intervals were drawn (None: none drawn)

    def fingerprint(self, row: str, which: str = "dataset") -> str | None:
        return ((self.provenance.get(row) or {}).get(which) or {}).get("fingerprint")

    def reference_rows(self) -> list[str]:
        """Rows whose dataset is the reference (--reference) of another row: the real sets."""
        refs = {self.fingerprint(r, "reference") for r in self.frame.index} - {None}
        return [r for r in self.frame.index if self.fingerprint(r) in refs]

    def reference_name(self, row: str) -> str | None:
        """The row evaluated on this row's reference set, else the reference folder's name."""
        fp = self.fingerprint(row, "reference")
        if fp is None:
            return None
        for other in self.frame.index:
            if other != row and self.fingerprint(other) == fp:
                return str(other)
        root = ((self.provenance.get(row) or {}).get("reference") or {}).get("root")
        return Path(root).name if root else fp

    def judge(self, row: str) -> str:
        """'judge (weights 9c14e2377548)': the embedder behind this row's identity metrics."""
        prov = self.provenance.get(row) or {}
        judge = prov.get("judge") or {}
        name = judge.get("spec") or prov.get("embedder")
        if name and judge.get("weights_id"):
            return f"{name} (weights {judge['weights_id']})"
        return str(name or prov.get("embedder_key") or "unknown judge")

    def groups_of(self, metric: str) -> list[str]:
        return [g for g, info in self.groups.items() if info["metric"] == metric]


# Options that bound memory or speed and never change a number: no setting of their own.
_NO_EFFECT_OPTIONS = frozenset({"block_mb", "batch_size"})


def _settings(metric: str, given: dict[str, Any] | None) -> str:
    """'bins=50': the -o options of a result that differ from the metric's defaults ('' for none)."""
    given = {k: v for k, v in (given or {}).items() if k not in _NO_EFFECT_OPTIONS}
    if not given:
        return ""
    from fsbench.options import as_dict, parse
    from fsbench.registry import get_registry

    values: dict[str, Any] = dict(given)
    try:
        schema = getattr(get_registry().get("metric", metric.partition(":")[0]), "Options", None)
        if schema is not None and dataclasses.is_dataclass(schema):
            parsed = as_dict(parse(schema, given, where=f"metric {metric!r}"))
            defaults = as_dict(parse(schema, {}, where=f"metric {metric!r}"))
            values = {k: parsed[k] for k in given if parsed.get(k) != defaults.get(k)}
    except UsageError:
        pass  # an unknown metric or option (a metrics.json written elsewhere): the options as recorded
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def load_results(runs: list[Path]) -> tuple[pd.DataFrame, dict[str, str], dict[str, Any]]:
    """Read each run's metrics.json into one frame (rows named after the run folders)."""
    results = load_evaluations(runs)
    return results.frame, results.spaces, results.provenance


def load_evaluations(runs: list[Path]) -> Results:
    """Each run's metrics.json in one frame; columns keyed by metric x feature space x settings."""
    # row -> (metric, space, settings, scalars)
    found: dict[str, list[tuple[str, str | None, str, dict[str, Any]]]] = {}
    provenance: dict[str, Any] = {}
    folders: dict[str, Path] = {}
    for run in runs:
        run = Path(run)
        path = run / "metrics.json" if run.is_dir() else run
        if not path.exists():
            raise UsageError(f"{path}: no metrics.json (run `fsbench evaluate --out {run}` first)")
        try:
            data = json.loads(path.read_text())
            metrics = data["metrics"]
            prov = data.get("provenance") or {}
            options = prov.get("metric_options") or {}
            results = []
            for metric, result in metrics.items():
                scalars = {
                    key: value for key, value in result.items()
                    if key not in ("notes", "space", "error") and (value is None or isinstance(value, (int, float)))
                }
                if scalars:  # a failed metric ({"error": ...}) has no column
                    settings = _settings(metric, options.get(metric.partition(":")[0]))
                    results.append((metric, _space(metric, result, prov), settings, scalars))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"{path}: not an fsbench metrics.json ({exc})") from None
        label = run.name if run.is_dir() else run.parent.name
        if label in found:
            label = str(run)
        found[label] = results
        provenance[label] = prov
        folders[label] = path.parent

    # metric -> (space, settings) -> scalar names, each level in first-seen order (the order of --metrics)
    layout: dict[str, dict[tuple[str | None, str], dict[str, None]]] = {}
    for results in found.values():
        for metric, space, settings, scalars in results:
            layout.setdefault(metric, {}).setdefault((space, settings), {}).update(dict.fromkeys(scalars))

    def group(metric: str, space: str | None, settings: str) -> str:
        variants = layout[metric]
        if len(variants) == 1:
            return metric
        parts = []
        if len({sp for sp, _ in variants}) > 1:
            parts.append(space or "no space recorded")
        if len({st for _, st in variants}) > 1:
            parts.append(settings or "defaults")
        return f"{metric} [{'; '.join(parts)}]"

    columns = [f"{group(m, *v)}.{k}" for m, variants in layout.items() for v, keys in variants.items() for k in keys]
    spaces = {group(m, *v): v[0] for m, variants in layout.items() for v in variants if v[0]}
    groups = {group(m, *v): {"metric": m, "space": v[0], "settings": v[1]} for m, variants in layout.items()
              for v in variants}
    rows = [
        {f"{group(metric, space, st)}.{k}": v for metric, space, st, scalars in results for k, v in scalars.items()}
        for results in found.values()
    ]
    frame = pd.DataFrame(rows, index=list(found), columns=columns, dtype=float)
    frame.index.name = "dataset"
    return Results(frame, spaces, provenance, folders, groups)


def add_intervals(results: Results, spec: Bootstrap) -> Results:
    """`results` with bootstrap intervals of every scalar that is a mean over identities:
    columns "GROUP.scalar.ci_low" and ".ci_high" at the end of each column group."""
    from fsbench.report.bootstrap import per_identity_intervals

    frame = results.frame
    bounds: dict[str, dict[str, float]] = {}  # column -> row -> value
    for row, folder in results.folders.items():
        path = folder / "per_identity.parquet"
        if not path.exists():
            continue
        try:
            per_identity = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: unreadable per-identity table ({exc})") from None
        for group, info in results.groups.items():
            scalars = {c.rpartition(".")[2]: frame.at[row, c] for c in frame.columns
                       if c.rpartition(".")[0] == group and not _is_interval(c)}
            if all(pd.isna(v) for v in scalars.values()):
                continue  # this row has no result in this group
            found = per_identity_intervals(per_identity, info["metric"], {k: float(v) for k, v in scalars.items()}, spec)
            for scalar, (low, high, _) in found.items():
                bounds.setdefault(f"{group}.{scalar}.ci_low", {})[row] = low
                bounds.setdefault(f"{group}.{scalar}.ci_high", {})[row] = high
    ordered = []
    for group, scalars in _groups(frame).items():
        ordered += [f"{group}.{k}" for k in scalars]
        ordered += [f"{group}.{k}.{end}" for k in scalars for end in ("ci_low", "ci_high")
                    if f"{group}.{k}.{end}" in bounds]
    out = pd.DataFrame({c: frame[c] if c in frame.columns else pd.Series(bounds[c], dtype=float) for c in ordered},
                       index=frame.index, columns=ordered, dtype=float)
    out.index.name = frame.index.name
    return dataclasses.replace(results, frame=out, bootstrap=spec)


def _is_interval(column: str) -> bool:
    return column.endswith((".ci_low", ".ci_high"))


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
        if _is_interval(column):
            continue
        group, _, scalar = column.rpartition(".")  # scalar names hold no dot; spaces may
        groups.setdefault(group, []).append(scalar)
    return groups


def _cells(frame: pd.DataFrame, row: str, group: str, scalars: list[str]) -> list[Headline]:
    """The headline cells of one group of one row, each with its interval when the frame has one."""
    values = {k: frame.at[row, f"{group}.{k}"] for k in scalars}
    cells = headlines(group.partition(" [")[0], {k: (None if pd.isna(v) else float(v)) for k, v in values.items()})
    out = []
    for h in cells:
        low, high = (f"{group}.{h.scalar}.ci_{end}" for end in ("low", "high"))
        if low in frame.columns and high in frame.columns and not pd.isna(frame.at[row, low]):
            h = dataclasses.replace(h, low=float(frame.at[row, low]), high=float(frame.at[row, high]))
        out.append(h)
    return out


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


@dataclass(frozen=True)
class SummaryTable:
    """The headline table every format renders: a row per dataset, a cell per headline scalar
    (`evaluate`'s cells, each with its bootstrap interval where the frame has one)."""

    headers: list[str]  # "cst", "cst [space]", "prdc.recall"
    arrows: list[str]  # "↑", "↓" or ""
    rows: list[tuple[str, list[Headline]]]

    def interval_columns(self) -> list[int]:
        return [i for i in range(len(self.headers)) if any(cells[i].has_interval() for _, cells in self.rows)]


def summary_table(frame: pd.DataFrame) -> SummaryTable:
    columns = _summary_columns(frame)
    return SummaryTable(
        [header for header, _ in columns],
        [arrow(group.partition(" [")[0]) for _, group in columns],
        [(str(row), _summary_cells(frame, row)) for row in frame.index],
    )


def _markdown(frame: pd.DataFrame, spaces: dict[str, str], title: str, provenance: dict[str, Any],
              *, drawn: Any = None, bootstrap: Bootstrap | None = None, settings: dict[str, str] | None = None,
              references: list[str] | None = None) -> str:
    table = summary_table(frame)
    headers = [f"{h} {a}".rstrip() for h, a in zip(table.headers, table.arrows)]
    lines = [f"# {title}", "", "| dataset | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    for row, cells in table.rows:
        lines.append(f"| {row} | " + " | ".join(h.text() for h in cells) + " |")
    lines += ["", "↑ higher is better, ↓ lower is better; values are mean ± std over identities (or folds, or KID subsets).", ""]
    shown = table.interval_columns()
    if bootstrap is not None and shown:
        lines += ["## Confidence intervals", "",
                  "| dataset | " + " | ".join(headers[i] for i in shown) + " |", "|---|" + "---|" * len(shown)]
        for row, cells in table.rows:
            lines.append(f"| {row} | " + " | ".join(cells[i].interval_text() for i in shown) + " |")
        lines += ["", f"[low, high]: {bootstrap.describe()}, the interval of the mean "
                      "(results.csv: columns `GROUP.SCALAR.ci_low`, `GROUP.SCALAR.ci_high`).", ""]
    if references:
        lines += [f"Reference (real) set: {', '.join(references)}.", ""]
    by_space: dict[str, list[str]] = {}
    for group in _groups(frame):
        if group in spaces:
            by_space.setdefault(spaces[group], []).append(group)
    if by_space:
        lines += ["## Feature spaces", ""]
        lines += [f"- `{space}`: {', '.join(names)}" for space, names in by_space.items()]
        lines.append("")
    if settings and any(settings.values()):
        lines += ["## Settings", ""]
        lines += [f"- {group}: {value}" for group, value in settings.items() if value]
        lines.append("")
    if drawn is not None and (drawn.figures or drawn.skipped):
        lines += ["## Figures", ""]
        for fig in drawn.figures:
            lines += [f"![{fig.title.splitlines()[0]}]({fig.png.name})", "", f"{fig.caption} (`{fig.svg.name}`)", ""]
        if drawn.skipped:
            lines += ["Not drawn:", ""] + [f"- {note}" for note in drawn.skipped] + [""]
    lines += ["## Provenance", ""]
    for row, prov in provenance.items():
        lines.append(
            f"- **{row}**: fsbench {prov.get('fsbench_version')} ({prov.get('git_commit')}), seed {prov.get('seed')}, "
            f"embedder `{prov.get('embedder')}`, dataset fingerprint `{(prov.get('dataset') or {}).get('fingerprint')}`, "
            f"{prov.get('created')}"
        )
    return "\n".join(lines) + "\n"


def write_report(runs: list[Path], out_dir: Path, title: str = "fsbench comparison",
                 results_folder: ResultsFolder | None = None, bootstrap: Bootstrap | None = None,
                 samples: bool = True) -> Report:
    """`results_folder` (`fsbench report`): refuse an `out_dir` holding results unless --overwrite,
    whose old files (a stale figure) are removed before these are written.

    Writes report.md, report.html, table.tex, results.csv + results.parquet (one frame),
    provenance.json and the figures (PNG + SVG). `bootstrap`: how the intervals are drawn
    (default: 1,000 resamples, seed 0, 95 %). `samples=False`: no sample grids (a small report)."""
    results = add_intervals(load_evaluations(runs), bootstrap or Bootstrap())
    frame, spaces, provenance = results.frame, results.spaces, results.provenance
    if results_folder is not None:
        results_folder.check(out_dir)
        results_folder.start()
    out_dir.mkdir(parents=True, exist_ok=True)
    from fsbench.report import html, latex
    from fsbench.report.plots import write_figures

    drawn = write_figures(results, out_dir, samples=samples)
    table = summary_table(frame)
    settings = {g: info["settings"] for g, info in results.groups.items()}
    references = results.reference_rows()
    md, csv, parquet = out_dir / "report.md", out_dir / "results.csv", out_dir / "results.parquet"
    page, tex = out_dir / "report.html", out_dir / "table.tex"
    _write_text(md, _markdown(frame, spaces, title, provenance, drawn=drawn, bootstrap=results.bootstrap,
                              settings=settings, references=references))
    _write_text(csv, frame.to_csv())
    _write_parquet(frame, parquet, results.bootstrap)
    _write_text(page, html.render(title, table, frame=frame, spaces=spaces, settings=settings,
                                  bootstrap=results.bootstrap, figures=drawn.figures, skipped=drawn.skipped,
                                  provenance=provenance, references=references,
                                  judges={row: results.judge(row) for row in frame.index}))
    _write_text(tex, latex.render(table, title=title, bootstrap=results.bootstrap, references=references))
    _write_text(out_dir / "provenance.json", json.dumps(provenance, indent=2, default=str) + "\n")
    return Report(frame, spaces, md, csv, [f.png for f in drawn.figures], parquet=parquet, html=page, latex=tex,
                  svgs=[f.svg for f in drawn.figures], skipped_figures=drawn.skipped, bootstrap=results.bootstrap,
                  groups=results.groups)


def _write_parquet(frame: pd.DataFrame, path: Path, bootstrap: Bootstrap | None) -> None:
    """The frame as Parquet, the bootstrap's settings in its metadata (pandas keeps `attrs`)."""
    out = frame.copy()
    out.attrs = {"fsbench_bootstrap": bootstrap.to_json() if bootstrap else None}
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    out.to_parquet(tmp)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)

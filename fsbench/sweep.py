"""`fsbench sweep`: one generator option varied over values, each sample scored by metrics.

The output is one row per metric scalar and one column per value, VIGFace's Table 1 layout
when the option is ``guidance`` and the metric ``iou`` (genuine and impostor IoU against the
real set, and their average). Each value's samples are keyed like `evaluate --generator`'s, so
a sweep run again (into the same --out with --overwrite, which keeps the samples) reuses them.

A metric that fails for some value is recorded in ``errors`` ({value: {metric: reason}});
the other values and metrics are still scored and saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsbench.errors import UsageError
from fsbench.results_folder import ResultsFolder

__all__ = ["sweep"]


def sweep(generator: str, vary: str, *, run_dir: Path | None, ids: int, per_id: int, seed: int, metrics: str,
          reference: Path | None, embedder: str | None, options: dict[str, str], out: Path,
          metric_options: dict[str, str] | None = None, results_folder: ResultsFolder | None = None) -> dict[str, Any]:
    from fsbench.evaluate_run import run_evaluation

    key, sep, values = vary.partition("=")
    steps = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key or not steps:
        raise UsageError(f"--vary {vary!r}: expected KEY=V1,V2,... (e.g. guidance=0.5,1,1.5,2,2.5,3)")
    if key in options:
        raise UsageError(f"--vary {key} and -o {key} both set it; drop one")
    if results_folder is not None:
        results_folder.check(out)  # the whole sweep is one results folder
    columns: dict[str, dict[str, float]] = {}
    errors: dict[str, dict[str, str]] = {}
    for value in steps:
        opts = {f"{generator}.{k}": v for k, v in {**options, key: value}.items()}
        result = run_evaluation(dataset_dir=None, generator=generator, run_dir=run_dir, ids=ids, per_id=per_id,
                                seed=seed, metric_specs=metrics, reference_dir=reference, embedder=embedder,
                                metric_options={**(metric_options or {}), **opts}, out_dir=out / f"{key}={value}",
                                results_folder=results_folder)  # the sweep's folder: checked and locked once
        if result.errors:
            errors[value] = dict(result.errors)
        columns[value] = {f"{name}.{scalar}": v for name, r in result.results.items() for scalar, v in r.scalars.items()}
        judge = result.provenance.get("judge")
    rows = sorted({row for col in columns.values() for row in col}, key=lambda r: list(columns[steps[0]]).index(r)
                  if r in columns[steps[0]] else 1_000)
    table = {row: {value: columns[value].get(row) for value in steps} for row in rows}
    figure = sweep_figure(table, steps, key, f"{generator}, judge {(judge or {}).get('spec')}", out / "sweep")
    return {"generator": generator, "vary": key, "values": steps, "table": table, "judge": judge, "out": str(out),
            "errors": errors, "figures": [str(p) for p in figure]}


def sweep_figure(table: dict[str, dict[str, Any]], steps: list[str], key: str, title: str, stem: Path) -> list[Path]:
    """Every numeric row of the table against the varied value (Table 1 as lines: genuine,
    impostor and average IoU against w) as STEM.png and STEM.svg; none when nothing is numeric."""
    import math

    from fsbench.report.figures import new_figure, save_figure

    def number(v: Any) -> float | None:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    series = {row: [number(vals[s]) for s in steps] for row, vals in table.items()
              if any(number(vals[s]) is not None for s in steps) and not row.startswith(("n_", "iou.n_"))}
    if not series:
        return []
    try:
        xs: list[float] = [float(s) for s in steps]
    except ValueError:  # categorical values: evenly spaced, labelled
        xs = list(range(len(steps)))
    fig = new_figure(6.0, 3.6)
    ax = fig.add_subplot()
    for row, ys in list(series.items())[:8]:
        ax.plot(xs, [math.nan if y is None else y for y in ys], marker="o", label=row)
    ax.set_xticks(xs, steps)
    ax.set_xlabel(key)
    ax.set_title(f"{title}: sweep of {key}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, stem)

"""One evaluation: open the data, build the context, run each metric, save the results.

Saved next to each other in the output folder: ``metrics.json`` (every scalar, every note,
the provenance: versions, seed, fingerprints, feature spaces, options), and
``per_identity.parquet`` (one row per identity, one column per per-identity value).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsbench
from fsbench import ui
from fsbench.api import MetricResult
from fsbench.data import FaceDataset
from fsbench.errors import MetricError, UsageError
from fsbench.evaluation import EvalContext
from fsbench.registry import get_registry


@dataclass
class EvaluationResult:
    dataset: str
    out_dir: Path
    results: dict[str, MetricResult]
    errors: dict[str, str]
    provenance: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # the metric specs as --metrics listed them

    def names(self) -> list[str]:
        """Every metric, scored or failed, in the order of --metrics."""
        done = {**self.results, **self.errors}
        return [n for n in self.order if n in done] + [n for n in done if n not in self.order]

    def to_json(self) -> dict[str, Any]:
        metrics = {
            name: self.results[name].to_json() if name in self.results else {"error": self.errors[name]}
            for name in self.names()
        }
        return {
            "dataset": self.dataset,
            "metrics": metrics,
            "skipped": [list(s) for s in self.skipped],
            "provenance": self.provenance,
            "out": str(self.out_dir),
        }

    def notes(self) -> list[str]:
        notes = [f"{name}: {n}" for name, r in self.results.items() for n in r.notes]
        notes += [f"{name}: {msg}" for name, msg in self.errors.items()]
        return notes

    def table(self):
        """One row per headline scalar (fsbench.report.headline, as `report` shows them)."""
        from fsbench.report.headline import arrow, headlines

        rows = []
        for name in self.names():
            if name in self.errors:
                rows.append([name, "error", None, "", self.errors[name]])
                continue
            r = self.results[name]
            shown = headlines(name, r.scalars)
            hidden = {h.scalar for h in shown} | ({"std"} if any(h.std is not None for h in shown) else set())
            others = ", ".join(f"{k}={_fmt(v)}" for k, v in r.scalars.items() if k not in hidden)
            for i, h in enumerate(shown):
                rows.append([f"{name} {arrow(name)}".strip(), h.scalar, h.text(), r.space or "", others if i == 0 else ""])
        return ui.table(f"evaluation of {self.dataset}", ["metric", "scalar", "value", "space", "other"], rows)


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(fsbench.__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _platform() -> dict[str, Any]:
    """The torch build and CPU kernels behind embeddings, when torch was used at all."""
    if "torch" not in sys.modules:
        return {}
    from fsbench.train.device import compute_platform

    return {"platform": compute_platform()}


def _split_options(specs: list[str], options: dict[str, str], generator: str | None = None) -> dict[str, dict[str, str]]:
    """`-o iou.bins=50` -> {"iou": {"bins": "50"}}; with --generator G, `-o G.guidance=2` goes to
    G's sampling options (under the key G). An option for an unselected metric is refused."""
    names = {s.partition(":")[0] for s in specs} | ({generator} if generator else set())
    per_metric: dict[str, dict[str, str]] = {n: {} for n in names}
    for key, value in options.items():
        metric, dot, opt = key.partition(".")
        if not dot or metric not in names:
            also = f" or {generator}.KEY=VALUE for the generator" if generator else ""
            raise UsageError(f"-o {key}={value}: expected METRIC.KEY=VALUE for one of --metrics "
                             f"({', '.join(sorted(names - {generator}))}){also}")
        per_metric[metric][opt] = value
    return per_metric


def _open_generated(generator: str, run_dir: Path | None, ids: int, per_id: int, samples: Path, seed: int,
                    options: dict[str, str]) -> FaceDataset:
    """Sample into a folder keyed by everything the samples are a function of (checkpoints,
    config, options, seed, sizes): another run, seed or size never reuses stale samples."""
    from fsbench.sampling import plan_sampling, sample_dataset

    plan = plan_sampling(get_registry().generator(generator), run_dir, n_ids=ids, per_id=per_id, seed=seed,
                         overrides=options)
    out = samples / f"{generator}-{plan.digest()}"
    dataset = sample_dataset(plan.sampler, plan.request, out, info=plan.info)
    assert dataset is not None  # one shard: this process finishes the dataset
    return dataset


def _choose_judge(metrics: dict[str, Any], embedder: str | None, dataset: FaceDataset,
                  reference: FaceDataset | None, benches: list[Path]) -> dict[str, Any] | None:
    """{spec, reason} of the face embedder when some metric needs one (None otherwise).

    An explicit --embedder wins; else `fsbench.judge.default_embedder` decides from the
    environment, the user config and the lineage of the dataset (and of the reference and
    benchmarks scored in the same space)."""
    if not any(m.needs & {"embeddings", "benchmarks"} for m in metrics.values()):
        return None
    if embedder is not None:
        return {"spec": embedder, "reason": "--embedder", "default": False}
    from fsbench.judge import benchmark_info, default_embedder

    others = ([reference.info] if reference is not None else []) + [benchmark_info(b) for b in benches]
    spec, reason = default_embedder(dataset.info, others)
    return {"spec": spec, "reason": reason, "default": True}


def run_evaluation(
    *,
    dataset_dir: Path | None,
    metric_specs: str,
    generator: str | None = None,
    run_dir: Path | None = None,
    ids: int = 100,
    per_id: int = 10,
    reference_dir: Path | None = None,
    embedder: str | None = None,
    features: str | None = None,
    benches: list[Path] | None = None,
    metric_options: dict[str, str] | None = None,
    out_dir: Path | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    use_cache: bool = True,
    cache_dir: Path | None = None,
) -> EvaluationResult:
    registry = get_registry()
    specs = [s.strip() for s in metric_specs.split(",") if s.strip()]
    if not specs:
        raise UsageError("--metrics is empty: name at least one metric (see `fsbench plugins`)")
    per_metric = _split_options(specs, metric_options or {}, generator)
    gen_options = per_metric.pop(generator, {}) if generator else {}
    metrics = {spec: registry.metric(spec, **per_metric[spec.partition(":")[0]]) for spec in specs}
    if (dataset_dir is None) == (generator is None):
        raise UsageError("pass exactly one of --dataset DIR or --generator NAME")
    for bench in benches or []:
        if not Path(bench).exists():
            raise UsageError(f"{bench}: no such benchmark file")

    name = dataset_dir.name if dataset_dir else generator
    out_dir = Path(out_dir or f"eval-{name}")
    if generator is not None:
        dataset = _open_generated(generator, run_dir, ids, per_id, out_dir / "samples", seed, gen_options)
    else:
        dataset = FaceDataset.open(dataset_dir, skip_bad=skip_bad)
    reference = FaceDataset.open(reference_dir, skip_bad=skip_bad) if reference_dir else None
    judge = _choose_judge(metrics, embedder, dataset, reference, benches or [])
    if judge is not None:
        embedder = judge["spec"]
    ctx = EvalContext(
        dataset, reference=reference, embedder=embedder, features=features, benchmarks=benches or [],
        out_dir=out_dir, cache_dir=cache_dir, use_cache=use_cache, seed=seed,
    )
    # Refuse a missing input before any expensive work.
    for spec, metric in metrics.items():
        for need in sorted(metric.needs - {"images"}):
            ctx.require(need, spec)

    out_dir.mkdir(parents=True, exist_ok=True)
    if judge is not None:  # every number names its judge: its weights hash too
        judge_emb = ctx.embedder()
        judge.update(name=judge_emb.name, weights_id=judge_emb.weights_id(), space=judge_emb.cache_key())
        ui.err.print(f"judge: {judge['spec']} (weights {judge['weights_id']}): {judge['reason']}",
                     soft_wrap=True, markup=False, highlight=False)
    results: dict[str, MetricResult] = {}
    errors: dict[str, str] = {}
    for spec, metric in metrics.items():
        try:
            results[spec] = metric.compute(ctx)
        except MetricError as exc:
            errors[spec] = f"undefined: {exc}"
    if not results:
        raise MetricError("; ".join(f"{k}: {v}" for k, v in errors.items()))

    provenance = {
        "fsbench_version": fsbench.__version__,
        "git_commit": _git_commit(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": sys.argv[1:],
        "seed": seed,
        "dataset": {"root": str(dataset.root), "fingerprint": dataset.fingerprint(), "info": dataset.info},
        "reference": ({"root": str(reference.root), "fingerprint": reference.fingerprint()} if reference else None),
        "embedder": embedder,
        "embedder_key": ctx.embedder().cache_key() if embedder else None,
        "judge": judge,
        "features": features,
        "benchmarks": [str(b) for b in benches or []],
        "metric_options": per_metric,
        "python": sys.version.split()[0],
        **_platform(),
    }
    result = EvaluationResult(str(dataset.root), out_dir, results, errors, provenance, list(dataset.skipped),
                              order=list(metrics))
    _save(result)
    return result


def _save(result: EvaluationResult) -> None:
    out = result.out_dir
    tmp = out / f"metrics.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(json.loads(ui.dumps(result.to_json())), indent=2) + "\n")
    os.replace(tmp, out / "metrics.json")

    per_identity = None
    for name, r in result.results.items():
        if r.per_item is None or r.per_item.empty:
            continue
        frame = r.per_item
        if "identity" in frame.columns:
            frame = frame.set_index("identity").add_prefix(f"{name}.")
            per_identity = frame if per_identity is None else per_identity.join(frame, how="outer")
        else:
            _atomic_frame(frame, out / f"{name.replace(':', '_')}_items.csv")
    if per_identity is not None:
        _atomic_frame(per_identity.reset_index(), out / "per_identity.parquet")


def _atomic_frame(frame, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    if path.suffix == ".parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    os.replace(tmp, path)

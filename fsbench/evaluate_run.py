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
from fsbench.results_folder import ResultsFolder


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

    def to_pandas(self):
        """One row (the dataset) and one column per metric scalar, ``cst.mean``, ``sep.std``...,
        as `fsbench report` lays out its table; a failed metric has no column.
        ``pandas.concat([r.to_pandas() for r in results])`` lines several evaluations up."""
        import pandas as pd

        row = {f"{name}.{key}": value for name in self.names() if name in self.results
               for key, value in self.results[name].scalars.items()}
        frame = pd.DataFrame([row], index=[Path(self.dataset).name or self.dataset], dtype=float)
        frame.index.name = "dataset"
        return frame

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
    return ui.format_number(v)


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


EMBEDDED_WORLD_SEED = 0  # the world the shipped embedded defaults trained on (their recipe.json)


def _embedded_world_reference(ids: int, per_id: int, samples: Path) -> FaceDataset:
    """`--generator G` with no --run and no --reference: the shipped default trained on the seed-0
    world, so a metric that needs a reference (fd, iou, leakage) gets those people, as many as
    were sampled (the first `ids` identities, `per_id` images each), rendered once into the cache."""
    ui.err.print(f"reference: the embedded world the default run trained on (procedural seed {EMBEDDED_WORLD_SEED}, "
                 f"{ids} x {per_id}); pass --reference DIR for another", soft_wrap=True, markup=False)
    return _open_generated("procedural", None, ids, per_id, samples, EMBEDDED_WORLD_SEED, {})


def _wants_face_embedder(metric: Any, features: str | None) -> bool:
    """Identity and verification metrics, and a distribution metric whose space is the run's
    embedder (fd with no :OPTION and no --features) embed faces with the judge or --embedder."""
    if metric.needs & {"embeddings", "benchmarks"}:
        return True
    return (getattr(metric, "default_space", "own") is None and not getattr(metric, "option", None)
            and features is None)


def _open_embeddings(embeddings: Any, **given: Any):
    """`--embeddings FILE.npz` (from Python also a mapping of its arrays, or (E, labels)) as a
    checked `fsbench.precomputed.Precomputed`. The vectors replace the images, the judge and
    the feature space, so options naming any of those are refused rather than ignored."""
    from fsbench.precomputed import Precomputed, from_arrays, load_npz

    clash = [f"--{flag}" for flag, value in given.items() if value]
    if clash:
        raise UsageError(f"--embeddings holds the vectors to score: drop {', '.join(clash)} (a reference set "
                         "goes into the .npz as reference_embeddings and reference_labels)")
    if isinstance(embeddings, Precomputed):
        return embeddings
    if isinstance(embeddings, (str, os.PathLike)):
        return load_npz(embeddings)
    if isinstance(embeddings, tuple) and len(embeddings) == 2:
        embeddings = {"embeddings": embeddings[0], "labels": embeddings[1]}
    if hasattr(embeddings, "keys"):
        return from_arrays(dict(embeddings))
    raise UsageError(f"embeddings: expected an .npz path, a dict of arrays or (E, labels), not {type(embeddings).__name__}")


def _choose_judge(metrics: dict[str, Any], embedder: str | None, dataset: FaceDataset,
                  reference: FaceDataset | None, benches: list[Path], features: str | None = None) -> dict[str, Any] | None:
    """{spec, reason} of the face embedder when some metric needs one (None otherwise).

    An explicit --embedder wins; else `fsbench.judge.default_embedder` decides from the
    environment, the user config and the lineage of the dataset (and of the reference and
    benchmarks scored in the same space)."""
    if not any(_wants_face_embedder(m, features) for m in metrics.values()):
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
    results_folder: ResultsFolder | None = None,
    embeddings: Any = None,
) -> EvaluationResult:
    """Score a dataset folder, a generator's samples, or precomputed `embeddings` (an .npz
    path, or from Python its arrays: see `fsbench.precomputed`) with the metrics of `metric_specs`."""
    registry = get_registry()
    specs = [s.strip() for s in metric_specs.split(",") if s.strip()]
    if not specs:
        raise UsageError("--metrics is empty: name at least one metric (see `fsbench plugins`)")
    per_metric = _split_options(specs, metric_options or {}, generator)
    gen_options = per_metric.pop(generator, {}) if generator else {}
    metrics = {spec: registry.metric(spec, **per_metric[spec.partition(":")[0]]) for spec in specs}
    precomputed = None if embeddings is None else _open_embeddings(
        embeddings, dataset=dataset_dir, generator=generator, run=run_dir, reference=reference_dir,
        embedder=embedder, features=features, bench=benches)
    if precomputed is None and (dataset_dir is None) == (generator is None):
        raise UsageError("pass exactly one of --dataset DIR, --generator NAME or --embeddings FILE.npz")
    for bench in benches or []:
        if not Path(bench).exists():
            raise UsageError(f"{bench}: no such benchmark file")

    name = precomputed.name if precomputed else dataset_dir.name if dataset_dir else generator
    out_dir = Path(out_dir or f"eval-{name}")
    if results_folder is not None:  # refuse a folder holding results before sampling or embedding
        results_folder.check(out_dir)
    if precomputed is not None:  # the vectors are the data and the judge: no images, no embedder
        dataset, embedder = precomputed.dataset, precomputed.space
    elif generator is not None:
        dataset = _open_generated(generator, run_dir, ids, per_id, out_dir / "samples", seed, gen_options)
    else:
        dataset = FaceDataset.open(dataset_dir, skip_bad=skip_bad)
    reference = (precomputed.reference if precomputed else
                 FaceDataset.open(reference_dir, skip_bad=skip_bad) if reference_dir else None)
    if (reference is None and precomputed is None and generator is not None and run_dir is None
            and any("reference" in m.needs for m in metrics.values()) and dataset.info.get("embedded_world")):
        reference = _embedded_world_reference(ids, per_id, out_dir / "samples")
    judge = (_choose_judge(metrics, embedder, dataset, reference, benches or [], features) if precomputed is None
             else {"spec": embedder, "reason": f"precomputed embeddings {precomputed.source}", "default": False})
    if judge is not None:
        embedder = judge["spec"]
    ctx = precomputed.context(out_dir=out_dir, seed=seed) if precomputed else EvalContext(
        dataset, reference=reference, embedder=embedder, features=features, benchmarks=benches or [],
        out_dir=out_dir, cache_dir=cache_dir, use_cache=use_cache, seed=seed,
    )
    # Refuse a missing input before any expensive work.
    for spec, metric in metrics.items():
        for need in sorted(metric.needs - {"images"}):
            ctx.require(need, spec)

    if results_folder is not None:  # inputs checked: lock the folder, --overwrite removes the old results
        results_folder.start()
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


_EVALUATE_KW = {"ids": "ids", "per_id": "per_id", "features": "features", "bench": "benches", "benches": "benches",
                "options": "metric_options", "metric_options": "metric_options", "skip_bad": "skip_bad",
                "use_cache": "use_cache", "cache_dir": "cache_dir"}


def evaluation_folder(overwrite: bool) -> ResultsFolder:
    """The guard of an evaluation's --out, for the command and `evaluate` alike: samples/ (with
    --generator) is a cache keyed by the sampling request, never listed nor removed."""
    return ResultsFolder("evaluate", overwrite=overwrite, markers=("metrics.json",), cache_dirs=("samples",))


def evaluate(dataset: str | os.PathLike | None = None, generator: str | None = None, run: str | os.PathLike | None = None,
             metrics: str | list[str] | tuple[str, ...] = ("summary",), embedder: str | None = None,
             reference: str | os.PathLike | None = None, embeddings: Any = None, out: str | os.PathLike | None = None,
             seed: int = 0, overwrite: bool = False, **kw: Any) -> EvaluationResult:
    """`fsbench evaluate` from Python (``fsbench.evaluate``): the same run, the same files, the
    same numbers, returned as an `EvaluationResult` (``.to_pandas()``, ``.to_json()``,
    ``.results[name].per_item``).

    Give one of `dataset` (a folder), `generator` (sampled first; `run`, ``ids=``,
    ``per_id=``) or `embeddings` (an .npz path, a dict of its arrays, or ``(E, labels)``:
    no images, no embedder). `metrics` is a list or a comma-separated string. Further
    keywords as the command's options: ``features=``, ``bench=`` (a path or a list),
    ``options={"iou.bins": 50}`` (``-o``), ``skip_bad=``, ``use_cache=``, ``cache_dir=``.
    Results are written to `out`, by default ``eval-NAME`` in the working directory, as
    the command does, and as there a folder holding results is refused unless
    ``overwrite=True`` (which removes what the last run wrote). Expected mistakes raise `fsbench.errors.FsbenchError` subclasses
    with the one-line message the command prints.
    """
    unknown = sorted(set(kw) - set(_EVALUATE_KW))
    if unknown:
        raise TypeError(f"evaluate() got unexpected keyword argument(s) {', '.join(unknown)} "
                        f"(known: {', '.join(sorted(_EVALUATE_KW))})")
    args = {_EVALUATE_KW[k]: v for k, v in kw.items()}
    if isinstance(args.get("benches"), (str, os.PathLike)):
        args["benches"] = [args["benches"]]
    if args.get("benches"):
        args["benches"] = [Path(b) for b in args["benches"]]
    if args.get("cache_dir") is not None:
        args["cache_dir"] = Path(args["cache_dir"])

    def path(p: Any) -> Path | None:
        return None if p is None else Path(p)

    with evaluation_folder(overwrite) as folder:
        return run_evaluation(
            dataset_dir=path(dataset), generator=generator, run_dir=path(run), reference_dir=path(reference),
            metric_specs=metrics if isinstance(metrics, str) else ",".join(metrics), embedder=embedder,
            embeddings=embeddings, out_dir=path(out), seed=seed, results_folder=folder, **args,
        )

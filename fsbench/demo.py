"""`fsbench demo` and the generator leaderboard: every generator scored the same way, on CPU.

Sets of the same size (``ids`` identities x ``per_id`` images), each scored by the default
judge and trained on:

1. ``real``: a held-out set of the embedded world (procedural, seed S+1: people neither the
   judge, seed 9001, nor the shipped generators, seed 0, ever saw). It carries the world's
   three verification benchmarks (``lfw_like``, ``cfp_fp_like``, ``agedb_like``: identities
   no training set can reach) and is the reference every other set is held to; it is itself
   scored against ``real-2`` (seed S+3), a second real set: what a perfect generator would
   get (a row of its own in the leaderboard, `second_real`);
2. ``procedural-default``: new identities (seed S+2) with the world's default nuisance;
3. ``procedural-low-diversity``: the same identities with pose, blur, occlusion and
   expression turned down: a generator that lacks intra-class diversity;
4. ``vigface`` and 5. ``segtex``: samples of the two generators' embedded defaults
   (``generators/*/embedded``, trained on the seed-0 world), sampling seed S+2.

Each set is scored by `fsbench evaluate`'s machinery with the default judge (``judge``,
chosen for embedded-world data): CST, DIV, SEP, and against the real set the similarity
IoU, identity leakage, and FD / KID / PRDC in the judge's space (named in the report). Then
VIGFace's Table 2 as `fsbench benchmark fr` computes it: one `tiny` FR model per set (same
preset, same seed), its verification accuracy on the three benchmarks and the gap to the
real-trained model, GR = (Avg_real - Avg_syn) / Avg_syn. Those results join each set's
``metrics.json`` as ``fr_<bench>`` / ``fr_average`` / ``fr_gap`` (their space: the FR recipe),
so that one `write_report` table (Markdown, HTML, CSV, LaTeX, figures) holds every number.

What the numbers should show: the low-diversity set has a higher CST and a lower IoU with
the real set than the default procedural set (and trains a weaker FR model on the profile
benchmark). Every step resumes: datasets, samples and FR models already in the output
folder are reused (keyed by their sizes and settings); evaluations and the report are redone.

`run_demo` is `fsbench demo` (small sizes, minutes on 2 CPU cores); `run_comparison` with
larger sizes is the leaderboard (`python -m fsbench.leaderboard`, `make report`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsbench import ui
from fsbench.data import FaceDataset
from fsbench.report.compare import Report

BENCHMARKS = ("lfw_like", "cfp_fp_like", "agedb_like")
IDENTITY_METRICS = "cst,div,sep"
# Against the real set; kid and prdc default to the FID Inception (weights not shipped):
# here they are scored in the judge's space, which every result names.
AGAINST_REAL = "iou,leakage,fd,kid:judge,prdc:judge"
# A generator with little intra-class variation: near-frontal, evenly lit, sharp.
LOW_DIVERSITY = {"yaw_sd": 4.0, "profile_p": 0.0, "pitch_sd": 2.0, "roll_sd": 1.0, "blur_p": 0.0,
                 "glasses_p": 0.0, "hat_p": 0.0, "smile_p": 0.1, "open_mouth_p": 0.0}
GENERATORS = ("vigface", "segtex")  # their embedded defaults (generators/*/embedded)
FR_PRESET = "tiny"
DEMO_TITLE = "fsbench demo: the embedded world, procedural sets and both generators' embedded defaults"


@dataclass
class Steps:
    """Numbered steps with the time since the start, on stderr."""

    total: int
    start: float = field(default_factory=time.perf_counter)
    done: int = 0
    times: dict[str, float] = field(default_factory=dict)  # step -> seconds it took
    _last: tuple[str, float] | None = None

    def step(self, label: str, what: str) -> None:
        """Start step `label` (its key in `times`), described by `what` (rich markup)."""
        self._close()
        self.done += 1
        ui.err.print(f"[bold][{self.done}/{self.total}][/bold] {what} "
                     f"[dim]({self.elapsed():.0f} s elapsed)[/dim]", soft_wrap=True)
        self._last = (label, time.perf_counter())

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _close(self) -> None:
        if self._last is not None:
            what, t0 = self._last
            self.times[what] = round(time.perf_counter() - t0, 1)
            self._last = None

    def finish(self) -> float:
        self._close()
        return self.elapsed()


def _make_procedural(out: Path, ids: int, per_id: int, seed: int, **options: Any) -> FaceDataset:
    """A procedural set; a finished one from an earlier run (same folder: same sizes) is reused."""
    from fsbench.registry import get_registry

    if (out / "dataset.json").exists():
        return FaceDataset.open(out)
    return get_registry().generator("procedural").make(None, ids, per_id, out, seed, resume=True, **options)


def _sample_generator(name: str, out: Path, ids: int, per_id: int, seed: int) -> FaceDataset:
    """Samples of a generator's embedded default; reused when `out` holds this very request
    (same weights, options, seed and sizes), resampled when the shipped weights changed."""
    from fsbench.registry import get_registry
    from fsbench.sampling import plan_sampling, sample_dataset

    plan = plan_sampling(get_registry().generator(name), None, n_ids=ids, per_id=per_id, seed=seed)
    stale = False
    if (out / "dataset.json").exists():
        stale = json.loads((out / "dataset.json").read_text()).get("request") != plan.request.to_json()
    dataset = sample_dataset(plan.sampler, plan.request, out, info=plan.info, overwrite=stale)
    assert dataset is not None  # one shard: this process finishes the dataset
    return dataset


@dataclass(frozen=True)
class SetPlan:
    name: str
    role: str  # "real baseline", "real", "procedural" or "generator" (the FR table's label)
    description: str


def set_plans(generators: tuple[str, ...] = GENERATORS, second_real: bool = False) -> list[SetPlan]:
    """The sets in report order. ``real-2`` is always made (the real set is scored against it:
    the numbers a perfect generator would get); `second_real` makes it a row as well."""
    plans = [SetPlan("real", "real baseline",
                     "held-out real set of the embedded world (seed S+1), the reference; carries the benchmarks"),
             SetPlan("real-2", "real", "a second held-out real set (seed S+3): the real set's own reference")]
    plans += [SetPlan("procedural-default", "procedural", "new identities (seed S+2), the world's default nuisance"),
              SetPlan("procedural-low-diversity", "procedural",
                      "the same identities, pose/blur/occlusion/expression turned down")]
    plans += [SetPlan(g, "generator", f"{g}'s embedded default (generators/{g}/embedded), sampling seed S+2")
              for g in generators]
    return plans


def _build(plan: SetPlan, folder: Path, ids: int, per_id: int, seed: int, bench_pairs: int) -> FaceDataset:
    if plan.name == "real":
        return _make_procedural(folder, ids, per_id, seed + 1, benchmark=True, bench_pairs=bench_pairs)
    if plan.name == "real-2":
        return _make_procedural(folder, ids, per_id, seed + 3)
    if plan.name == "procedural-default":
        return _make_procedural(folder, ids, per_id, seed + 2)
    if plan.name == "procedural-low-diversity":
        return _make_procedural(folder, ids, per_id, seed + 2, **LOW_DIVERSITY)
    return _sample_generator(plan.name, folder, ids, per_id, seed + 2)


def _fr_space(meta: dict[str, Any]) -> str:
    cfg = meta["config"]
    return (f"fr:{meta['preset']} ({cfg['network']} w{cfg['width']} {cfg['input_size']}px {cfg['margin']} m{cfg['m']}, "
            f"{cfg['epochs']} epochs, seed {cfg['seed']}): one model trained per set, flip, {meta['folds']} folds; "
            "accuracy in %, higher is better; fr_gap: GR in %, lower is better")


def _add_fr_results(eval_dir: Path, row: dict[str, Any], meta: dict[str, Any], role: str) -> None:
    """The FR benchmark's numbers for this set, as metric results beside the judge's: accuracy
    (%) per benchmark (mean ± std over folds), their average, and GR (%) for a synthetic set."""
    def num(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    path = eval_dir / "metrics.json"
    data = json.loads(path.read_text())
    space = _fr_space(meta)
    note = (f"{row['training_set']}: a `{meta['preset']}` FR model trained on this set "
            f"({row['identities']} ids, {row['images']} images) and verified on {', '.join(meta['benchmarks'])}, "
            "as `fsbench benchmark fr` does; not a judge score")
    for bench in meta["benchmarks"]:
        data["metrics"][f"fr_{bench}"] = {"mean": num(row[bench]), "std": num(row[f"{bench}_std"]), "space": space,
                                          "notes": [note]}
    data["metrics"]["fr_average"] = {"mean": num(row["average"]), "space": space, "notes": [note]}
    if row["kind"] == "synthetic":  # every set but the baseline (a second real set too: the noise floor)
        data["metrics"]["fr_gap"] = {"gap_to_real_pct": num(row["gap_to_real_pct"]), "space": space,
                                     "notes": [f"GR = (Avg_real - Avg_syn) / Avg_syn against {meta['baseline']}, in %"]}
    data["provenance"]["fr_benchmark"] = {**meta, "run_dir": row["run_dir"], "train_seconds": row["train_seconds"],
                                          "reused": bool(row["reused"]), "role": role}
    tmp = path.with_name(f"metrics.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _write_fr_tables(df: Any, meta: dict[str, Any], out: Path, roles: list[str]) -> None:
    """fr_benchmark.{csv,md,json}, as `fsbench benchmark fr --out` writes them, each training
    set labelled with its role (a second real set is "synthetic" only to `run_gap_benchmark`)."""
    from fsbench.plugins.fr.gap import table_rows, to_markdown

    head, rows = table_rows(df, list(meta["benchmarks"]))
    for row, name, role in zip(rows, df["training_set"], roles):
        row[0] = f"{name} ({role})"
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "fr_benchmark.csv", index=False)
    (out / "fr_benchmark.md").write_text(to_markdown(head, rows, meta))
    (out / "fr_benchmark.json").write_text(json.dumps({**meta, "rows": df.to_dict("records")}, indent=2, default=str))


def run_comparison(
    out_dir: Path,
    *,
    ids: int,
    per_id: int,
    seed: int = 0,
    bench_pairs: int = 1200,
    generators: tuple[str, ...] = GENERATORS,
    second_real: bool = False,
    fr_preset: str = FR_PRESET,
    fr_overrides: dict[str, Any] | None = None,
    report_dir: Path | None = None,
    title: str = DEMO_TITLE,
    sheets: bool = True,
    samples: bool = True,
    label: str = "demo",
) -> Report:
    """Build (or reuse) every set, score it with the default judge, train and verify one FR
    model per set, and write the report (`write_report`: Markdown, HTML, CSV, Parquet, LaTeX,
    figures; `samples=False`: no sample grids) into `report_dir` (default OUT/report). Returns
    the report; `report.timings` (and OUT/timings.json) holds the seconds of each step. `label`:
    the run's name in its messages and in the report folder's results manifest."""
    from fsbench.evaluate_run import run_evaluation
    from fsbench.plugins.fr.gap import run_gap_benchmark
    from fsbench.report.compare import write_report
    from fsbench.results_folder import ResultsFolder

    out_dir = Path(out_dir)
    report_dir = Path(report_dir) if report_dir is not None else out_dir / "report"
    plans = set_plans(generators, second_real)
    progress = Steps(total=len(plans) + 3)
    ui.err.print(f"[bold]fsbench {label}[/bold]: "
                 f"{len(plans)} sets of {ids} identities x {per_id} images (seed {seed}), each scored by the "
                 f"default judge and trained on (FR preset {fr_preset}), {bench_pairs} pairs per benchmark -> {out_dir}",
                 soft_wrap=True)
    data_dir = out_dir / "data" / f"{ids}x{per_id}-seed{seed}"  # other sizes or seeds: other folders
    sets: dict[str, FaceDataset] = {}
    for plan in plans:
        verb = "sampling" if plan.name in generators else "rendering"
        progress.step(plan.name, f"{verb} [bold]{plan.name}[/bold]: {plan.description}")
        sets[plan.name] = _build(plan, data_dir / plan.name, ids, per_id, seed, bench_pairs)
    real = sets["real"]
    benches = [real.root / "benchmarks" / name / f"{name}.bin" for name in BENCHMARKS]
    if sheets:
        from fsbench.report.contact_sheet import contact_sheet

        for name, ds in sets.items():
            contact_sheet(ds, out_dir / f"sheet-{name}.png", n_ids=6, per_id=min(per_id, 6))

    rows = [p.name for p in plans if p.name != "real-2" or second_real]  # the report's rows, in order
    progress.step("scoring", f"scoring every set with the default judge: {IDENTITY_METRICS}, and against the real set "
                  f"(the real set against real-2): {AGAINST_REAL}")
    cache = out_dir / "cache"  # the run's embeddings, beside its data (FSBENCH_CACHE is not consulted)
    evals: dict[str, Path] = {}
    for name in rows:
        ds, reference = sets[name], sets["real-2" if name == "real" else "real"]
        ui.err.print(f"  scoring [bold]{name}[/bold] ({ds.num_identities} ids, {len(ds)} images) "
                     f"against {reference.root.name}", soft_wrap=True)
        result = run_evaluation(dataset_dir=ds.root, metric_specs=f"{IDENTITY_METRICS},{AGAINST_REAL}",
                                reference_dir=reference.root, out_dir=out_dir / "eval" / name, seed=seed, cache_dir=cache)
        evals[name] = result.out_dir

    progress.step("fr-gap", f"FR gap-to-real: one {fr_preset} FR model per set, verified on {', '.join(BENCHMARKS)} "
                  "(finished models are reused)")
    work = out_dir / "fr-gap"
    df, meta = run_gap_benchmark([sets[name].root for name in rows[1:]], real.root, benches, work, fr_preset,
                                 fr_overrides)
    meta["benchmarks"] = list(BENCHMARKS)
    roles = {p.name: p.role for p in plans}
    _write_fr_tables(df, meta, work, [roles[row] for row in rows])
    for row_name, (_, row) in zip(rows, df.iterrows()):  # the baseline (real) first, then the others in order
        _add_fr_results(evals[row_name], row.to_dict(), meta, roles[row_name])

    progress.step("report", f"writing the report (Markdown, HTML, CSV, LaTeX, figures) -> {report_dir}")
    with ResultsFolder(f"{label} report", overwrite=True, markers=("report.md", "results.csv")) as folder:
        report = write_report([evals[name] for name in rows], report_dir, title=title, results_folder=folder,
                              samples=samples)
        (report_dir / "fr_benchmark.md").write_text((work / "fr_benchmark.md").read_text())
    seconds = progress.finish()
    report.timings = {**progress.times, "total": round(seconds, 1)}  # type: ignore[attr-defined]
    (out_dir / "timings.json").write_text(json.dumps(report.timings, indent=2) + "\n")  # type: ignore[attr-defined]
    ui.err.print(f"done in {seconds:.0f} s: {report.html}", soft_wrap=True, markup=False)
    return report


# The columns `fsbench demo` prints (the report holds every number, with its interval and space).
SUMMARY = (("CST ↑", "cst.mean"), ("DIV", "div.mean"), ("SEP ↑", "sep.mean"), ("IoU ↑", "iou.mean"),
           ("FD ↓", "fd.fd"), ("FR % ↑", "fr_average.mean"), ("GR % ↓", "fr_gap.gap_to_real_pct"))


def summary_table(report: Report):
    """The headline numbers of each set, narrow enough for a terminal."""
    frame = report.frame

    def cell(row: str, column: str) -> str:
        value = frame.at[row, column] if column in frame.columns else float("nan")
        return "-" if math.isnan(value) else ui.format_number(float(value))

    rows = [[str(row), *(cell(row, column) for _, column in SUMMARY)] for row in frame.index]
    return ui.table("the default judge (IoU, FD: against the real set); FR: average accuracy of a model trained on the set",
                    ["set", *(header for header, _ in SUMMARY)], rows)


def run_demo(
    out_dir: Path,
    ids: int = 100,
    per_id: int = 8,
    seed: int = 0,
    *,
    bench_pairs: int = 1200,
    fr_overrides: dict[str, Any] | None = None,
    generators: tuple[str, ...] = GENERATORS,
) -> Report:
    """`fsbench demo`: `run_comparison` at the demo's size, the report in OUT/report."""
    return run_comparison(out_dir, ids=ids, per_id=per_id, seed=seed, bench_pairs=bench_pairs,
                          generators=generators, fr_overrides=fr_overrides)

"""`fsbench fr train`, `fsbench benchmark fr` and `fsbench benchmark classify`.

Only option parsing and printing live here; torch is imported when a command runs, so
`fsbench --help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import click

from fsbench import ui
from fsbench.errors import UsageError

PRESETS = ("tiny", "casia", "segtex")  # fsbench.train.fr.FR_PRESETS, listed without importing torch


def _overrides(pairs: tuple[str, ...]) -> dict[str, str]:
    from fsbench.options import parse_pairs

    return parse_pairs(pairs)


def _work_dir(out: Path | None) -> contextlib.AbstractContextManager[Path]:
    """`--out` when given (runs are kept and resumed), else a temporary folder removed after."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        return contextlib.nullcontext(out)
    return _temp()


@contextlib.contextmanager
def _temp():
    with tempfile.TemporaryDirectory(prefix="fsbench-fr-") as d:
        yield Path(d)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


preset_option = click.option("--preset", default="tiny", show_default=True, type=click.Choice(PRESETS),
                             help="tiny: CPU minutes; casia: the papers' r50 schedule; segtex: SegTex's classifier.")
override_option = click.option("-o", "overrides", multiple=True, metavar="KEY=VALUE",
                               help="Override a preset key (type-checked; unknown keys are refused).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")


# --------------------------------------------------------------------------- fr train


@click.group("fr")
def fr_group() -> None:
    """Face-recognition models: IResNet + ArcFace/CosFace/softmax heads."""


@fr_group.command("train")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path), help="Training ImageFolder.")
@click.option("--run", "--run-dir", "run_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder: config.json, metrics.jsonl, checkpoint.pt, backbone.pth. Resumes if present.")
@preset_option
@override_option
@json_option
def fr_train_cmd(data_dir: Path, run_dir: Path, preset: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Train (or resume) a face-recognition model on an ImageFolder.

    \b
    Examples:
      fsbench fr train --data world/train --run runs/fr --preset tiny
      fsbench fr train --data casia --run runs/casia --preset casia -o batch_size=256
      torchrun --nproc_per_node=8 -m fsbench.cli fr train --data casia --run-dir runs/casia --preset casia
    """
    from fsbench.train import dist
    from fsbench.train.fr import train_fr

    try:
        run = train_fr(data_dir, run_dir, preset, _overrides(overrides), show_progress=not as_json)
    finally:
        dist.shutdown()
    if not dist.detect().is_main:
        return  # under torchrun only rank 0 reports
    payload = {
        "run_dir": str(run.run_dir), "checkpoint": str(run.checkpoint), "backbone": str(run.backbone),
        "steps": run.steps, "seconds": round(run.seconds, 2), "loss": run.loss, "preset": preset,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in run.config.items()},
    }
    table = ui.table(f"fr train ({preset})", ["run", "steps", "seconds", "loss (last 20 steps)"],
                     [[str(run.run_dir), run.steps, round(run.seconds, 1), run.loss]])
    ui.emit(payload, as_json=as_json, table=table)


# --------------------------------------------------------------------------- benchmark


@click.command("fr")
@click.option("--train", "train_dirs", multiple=True, type=click.Path(path_type=Path),
              help="A synthetic training ImageFolder (repeat for several).")
@click.option("--baseline", required=True, type=click.Path(path_type=Path), help="The real training ImageFolder.")
@click.option("--bench", "benches", multiple=True, required=True,
              help="Verification packs, comma-separated and/or repeated: a.bin,b.bin.")
@preset_option
@override_option
@click.option("--mix", is_flag=True, help="Also train on real + each synthetic set (VIGFace Table 3).")
@click.option("--folds", default=10, show_default=True, help="Folds of the verification protocol.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Keep the models and write fr_benchmark.{csv,md,json} here (else a temporary folder).")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier benchmark in --out: its tables and models (trained again).")
@json_option
def benchmark_fr_cmd(train_dirs, baseline, benches, preset, overrides, mix, folds, out_dir, as_json,
                     overwrite=False) -> None:
    """Gap-to-real: one FR model per training set, verified on every benchmark (VIGFace Table 2).

    With --out, each model is kept under OUT/runs/, keyed by its data and config: run again
    with the same settings, finished models are reused (and interrupted ones resumed) and only
    verified. A benchmark with other settings in --out is refused unless --overwrite, which
    removes what it wrote (tables and models) and trains again.

    \b
    Example:
      fsbench benchmark fr --train syn --baseline world/train \\
        --bench world/benchmarks/lfw_like/lfw_like.bin,world/benchmarks/agedb_like/agedb_like.bin --out bench-fr
    """
    from fsbench.plugins.fr.gap import bench_names, run_gap_benchmark, table_rows, to_markdown
    from fsbench.results_folder import ResultsFolder

    paths = [Path(p.strip()) for spec in benches for p in spec.split(",") if p.strip()]
    if folds < 1:
        raise UsageError(f"--folds must be at least 1, got {folds}")
    folder = ResultsFolder("benchmark fr", overwrite=overwrite, markers=("fr_benchmark.csv",)) if out_dir else None
    with _work_dir(out_dir) as work, folder or contextlib.nullcontext():
        df, meta = run_gap_benchmark(list(train_dirs), baseline, paths, work, preset, _overrides(overrides), mix, folds,
                                     results_folder=folder, retrain=overwrite)
        columns = bench_names(paths)
        head, rows = table_rows(df, columns)
        if out_dir is not None:
            df.to_csv(work / ".fr_benchmark.csv.tmp", index=False)
            os.replace(work / ".fr_benchmark.csv.tmp", work / "fr_benchmark.csv")
            _write_text(work / "fr_benchmark.md", to_markdown(head, rows, meta))
            _write_text(work / "fr_benchmark.json", json.dumps({**meta, "rows": df.to_dict("records")}, indent=2, default=str))
    payload = {**meta, "rows": df.drop(columns=["run_dir"] if out_dir is None else []).to_dict("records")}
    ui.emit(payload, as_json=as_json, table=ui.table("FR benchmark: verification accuracy (%)", head, rows))


@click.command("classify")
@click.option("--data", "data_dirs", multiple=True, required=True, type=click.Path(path_type=Path),
              help="ImageFolder to score (repeat to compare several, as SegTex's Table 7).")
@preset_option
@override_option
@click.option("--train-per-id", default=50, show_default=True,
              help="Training images per identity (the first ones); the rest validate.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Keep runs and write classify.{csv,json} here.")
@json_option
def benchmark_classify_cmd(data_dirs, preset, overrides, train_per_id, out_dir, as_json) -> None:
    """SegTex's protocol: a softmax classifier on the first 50 images per identity, accuracy on the rest.

    Identities with 50 images or fewer only train (no validation images); the output counts them.

    \b
    Example:
      fsbench benchmark classify --data world --data syn --preset tiny --out classify-out
    """
    import pandas as pd

    from fsbench.plugins.fr.classify import classify_benchmark

    results = []
    with _work_dir(out_dir) as work:
        for k, d in enumerate(data_dirs):
            results.append(classify_benchmark(d, work / f"{k:02d}-{Path(d).resolve().name}", preset,
                                              _overrides(overrides), train_per_id))
        if out_dir is not None:
            pd.DataFrame(results).to_csv(work / "classify.csv", index=False)
            _write_text(work / "classify.json", json.dumps({"rows": results}, indent=2))
    rows = [[r["dataset"], r["identities"], r["train_images"], r["val_images"], r["ids_without_val"], r["accuracy"]]
            for r in results]
    table = ui.table(f"classification (first {train_per_id} per identity train, rest validate)",
                     ["dataset", "ids", "train", "val", "ids w/o val", "accuracy (%)"], rows)
    ui.emit({"train_per_id": train_per_id, "preset": preset, "rows": results}, as_json=as_json, table=table)


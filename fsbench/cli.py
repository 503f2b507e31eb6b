"""The `fsbench` command line: parses options, calls the library, prints tables or JSON.

No logic of its own lives here. Plugins add commands through `fsbench_register_commands`
(`fsbench data make procedural`, `fsbench verify`, `fsbench fid` come from plugins).
Expected mistakes (`fsbench.errors.FsbenchError`) print one line on stderr and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

import fsbench
from fsbench import ui
from fsbench.errors import FsbenchError, UsageError

EPILOG_WIDTH = 100


class FsbenchGroup(click.Group):
    """A click group that reports FsbenchError as `error: <message>` and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FsbenchError as exc:
            ui.err.print(f"[red]error:[/red] {exc}", soft_wrap=True, markup=True, highlight=False)
            ctx.exit(exc.exit_code)


def parse_overrides(pairs: tuple[str, ...], option: str = "-o") -> dict[str, str]:
    """`key=value` strings -> dict (`fsbench.options.parse_pairs`); the generator or metric
    type-checks the values through its options schema."""
    from fsbench.options import parse_pairs

    return parse_pairs(pairs, option)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")


@click.group(cls=FsbenchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": EPILOG_WIDTH})
@click.version_option(fsbench.__version__, prog_name="fsbench")
def cli() -> None:
    """Train, sample and score synthetic face-recognition datasets.

    \b
    Quick start:
      fsbench data make procedural --out world --ids 50 --per-id 8
      fsbench evaluate --dataset world --embedder pixels --metrics summary,cst,sep
    """


# --------------------------------------------------------------------------- plugins


@cli.group("plugins", cls=FsbenchGroup, invoke_without_command=True)
@json_option
@click.pass_context
def plugins_cmd(ctx: click.Context, as_json: bool) -> None:
    """List every registered generator, metric, embedder and format, with its origin.

    \b
    Examples:
      fsbench plugins --json
      fsbench plugins show vigface     # its stages, presets and every option
    """
    if ctx.invoked_subcommand is not None:
        return
    from fsbench.registry import get_registry

    reg = get_registry()
    entries = reg.entries()
    rows = [
        {
            "kind": e.kind,
            "name": e.name,
            "plugin": e.plugin,
            "distribution": e.distribution,
            "version": e.version,
            "description": getattr(e.cls, "description", ""),
        }
        for e in entries
    ]
    for message in reg.load_errors:
        ui.warn(message)
    table = ui.table(
        "fsbench plugins",
        ["kind", "name", "plugin", "distribution", "version", "description"],
        [r.values() for r in rows],
    )
    ui.emit({"plugins": rows, "load_errors": reg.load_errors}, as_json=as_json, table=table)


@plugins_cmd.command("show")
@click.argument("name")
@click.option("--kind", type=click.Choice(["generator", "metric", "embedder", "format", "pipeline_step"]),
              help="When NAME is used by several kinds.")
@json_option
def plugins_show_cmd(name: str, kind: str | None, as_json: bool) -> None:
    """One plugin item: where it comes from and every option with its type, default and meaning.

    \b
    Example:
      fsbench plugins show iou
    """
    from fsbench.registry import get_registry

    info = get_registry().describe(name, kind)
    if as_json:
        ui.emit(info, as_json=True)
        return
    ui.out.print(f"[bold]{info['kind']} {info['name']}[/bold] ({info['plugin']}, {info['distribution']} "
                 f"{info['version']}): {info['description']}", soft_wrap=True)
    for stage in info.get("stages", []):
        ui.out.print(f"  stage {stage['name']} (needs: {', '.join(stage['needs']) or '-'}): {stage['description']}")
    for preset, values in info.get("presets", {}).items():
        ui.out.print(f"  preset {preset}: {', '.join(f'{k}={v}' for k, v in values.items()) or 'the defaults'}")
    for title, key in (("config (-o KEY=VALUE)", "config"), ("sampling options (-o on sample)",
                       "sample_options"), ("options", "options")):
        if info.get(key):
            rows = [[o["name"], o["type"], str(o["default"]), o["help"]] for o in info[key]]
            ui.out.print(ui.table(title, ["option", "type", "default", "meaning"], rows))


# --------------------------------------------------------------------------- data


@cli.group("data", cls=FsbenchGroup)
def data_cmd() -> None:
    """Make, inspect and convert face datasets."""


@data_cmd.group("make", cls=FsbenchGroup)
def data_make_cmd() -> None:
    """Make a dataset with a generator that needs no training (plugins add sub-commands).

    \b
    Example:
      fsbench data make procedural --out world --ids 100 --per-id 10 --benchmark
    """


@data_cmd.command("info")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable images and list them.")
@json_option
def data_info_cmd(root: Path, skip_bad: bool, as_json: bool) -> None:
    """Check a dataset folder and describe it (identities, images, size, fingerprint).

    \b
    Example:
      fsbench data info world --json
    """
    from fsbench.data import FaceDataset

    ds = FaceDataset.open(root, skip_bad=skip_bad)
    info = ds.describe()
    if skip_bad:
        for _ in ds.batches():  # decode everything once so truncated files are found too
            pass
        info["skipped"] = [list(s) for s in ds.skipped]
    counts = info["images_per_identity"]
    table = ui.table(
        f"dataset {root}",
        ["identities", "images", "size (HxW)", "per identity (min/mean/max)", "skipped", "fingerprint"],
        [[info["identities"], info["images"], "x".join(map(str, info["image_size"])),
          f"{counts['min']}/{counts['mean']:.1f}/{counts['max']}", len(info["skipped"]), info["fingerprint"]]],
    )
    ui.emit(info, as_json=as_json, table=table)
    for path, reason in info["skipped"]:
        ui.warn(f"skipped {root / path}: {reason}")


@data_cmd.command("show")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="PNG file to write.")
@click.option("--ids", default=8, show_default=True, help="Identities (rows).")
@click.option("--per-id", default=8, show_default=True, help="Images per identity (columns).")
@click.option("--masks", is_flag=True, help="Overlay segmentation masks (datasets with masks/).")
def data_show_cmd(root: Path, out: Path, ids: int, per_id: int, masks: bool) -> None:
    """Draw a contact sheet: identities in rows, their images in columns.

    \b
    Example:
      fsbench data show world --out sheet.png --masks
    """
    from fsbench.data import FaceDataset
    from fsbench.report.contact_sheet import contact_sheet

    path = contact_sheet(FaceDataset.open(root), out, n_ids=ids, per_id=per_id, overlay_masks=masks)
    ui.out.print(f"wrote {path}")


# --------------------------------------------------------------------------- generators


@cli.command("train")
@click.argument("generator")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path), help="Training dataset folder.")
@click.option("--run", "--run-dir", "run_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder (resumed if it exists; --run-dir under torchrun, whose own --run-path would take --run).")
@click.option("--preset", default="tiny", show_default=True, help="Preset of the generator (tiny, paper, ...).")
@click.option("-o", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (see `fsbench plugins`).")
@click.option("--stage", help="Train only this stage (its earlier stages must have finished).")
@click.option("--until", help="Train the stages up to and including this one.")
@json_option
def train_cmd(generator: str, data_dir: Path, run_dir: Path, preset: str, overrides: tuple[str, ...],
              stage: str | None, until: str | None, as_json: bool) -> None:
    """Train a generator's stages in order (resumes what RUN already holds).

    \b
    Examples:
      fsbench train vigface --data world --run runs/vig --preset tiny
      fsbench train vigface --data world --run runs/vig --stage diffusion -o max_steps=200
      torchrun --nproc_per_node=8 -m fsbench train vigface --data casia --run-dir runs/vig --preset paper
    """
    from fsbench.data import FaceDataset
    from fsbench.registry import get_registry
    from fsbench.runs import describe_run, select_stages, train_generator

    gen = get_registry().generator(generator)
    select_stages(gen, stage, until)  # a wrong stage name is refused before the data is read
    cfg_overrides = parse_overrides(overrides)
    gen.config(preset, cfg_overrides)  # ... and so is a wrong option
    train_generator(gen, FaceDataset.open(data_dir), run_dir, preset, cfg_overrides, stage=stage, until=until,
                    show_progress=not as_json)
    _show_run(describe_run(run_dir), as_json)


def _show_run(info: dict[str, Any], as_json: bool) -> None:
    rows = [[s["stage"], ", ".join(s["needs"]) or "-", s["state"], s["steps"], s["total_steps"],
             (s["checkpoint_sha256"] or "")[:12], s["last"].get("loss")] for s in info["stages"]]
    table = ui.table(f"run {info['run']} ({info['generator']}, preset {info['preset']}, data {info['data']})",
                     ["stage", "needs", "state", "steps", "of", "checkpoint sha256", "last loss"], rows)
    ui.emit(info, as_json=as_json, table=table)


@cli.group("runs", cls=FsbenchGroup)
def runs_cmd() -> None:
    """Inspect training runs."""


@runs_cmd.command("show")
@click.argument("run_dir", type=click.Path(path_type=Path))
@json_option
def runs_show_cmd(run_dir: Path, as_json: bool) -> None:
    """A run's stages (finished or not, steps, checkpoint hashes) and its config.

    \b
    Example:
      fsbench runs show runs/vig --json
    """
    from fsbench.runs import describe_run

    info = describe_run(run_dir)
    _show_run(info, as_json)
    if not as_json:
        ui.out.print("config: " + ", ".join(f"{k}={v}" for k, v in info["config"].items()), soft_wrap=True)


@cli.command("sample")
@click.argument("generator")
@click.option("--run", "--run-dir", "run_dir", type=click.Path(path_type=Path),
              help="Trained run folder (default: the embedded one; --run-dir under torchrun).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset folder to write.")
@click.option("--ids", default=100, show_default=True, help="Identities to sample.")
@click.option("--per-id", default=10, show_default=True, help="Images per identity.")
@click.option("--seed", default=0, show_default=True)
@click.option("--preset", default="tiny", show_default=True, help="Preset, for a generator that needs no training.")
@click.option("--shard", help="I/N: write shard I (0-based) of N into --out; the last to finish completes it.")
@click.option("--overwrite", is_flag=True, help="Replace a dataset sampled with other settings.")
@click.option("-o", "options", multiple=True, metavar="KEY=VALUE", help="Generator-specific sampling option.")
@json_option
def sample_cmd(generator: str, run_dir: Path | None, out: Path, ids: int, per_id: int, seed: int, preset: str,
               shard: str | None, overwrite: bool, options: tuple[str, ...], as_json: bool) -> None:
    """Sample a synthetic dataset from a (trained) generator; resumes after a kill.

    \b
    Examples:
      fsbench sample vigface --run runs/vig --out syn --ids 100 --per-id 10 -o guidance=2.5
      fsbench sample vigface --run runs/vig --out syn --ids 10000 --per-id 50 --shard 0/4   # and 1/4, 2/4, 3/4
    """
    from fsbench.registry import get_registry
    from fsbench.sampling import parse_shard, plan_sampling, sample_dataset

    part = parse_shard(shard)
    plan = plan_sampling(get_registry().generator(generator), run_dir, n_ids=ids, per_id=per_id, seed=seed,
                         preset=preset, overrides=parse_overrides(options))
    ds = sample_dataset(plan.sampler, plan.request, out, shard=part, info=plan.info, overwrite=overwrite,
                        show_progress=not as_json)
    if ds is None:
        ui.emit({"out": str(out), "shard": str(part), "complete": False}, as_json=as_json)
        return
    info = ds.describe()
    ui.emit({**info, "complete": True}, as_json=as_json)
    if not as_json:
        ui.out.print(f"wrote {info['images']} images of {info['identities']} identities to {out}")


def _check_counts(ids: int, per_id: int) -> None:
    if ids < 1:
        raise UsageError(f"--ids {ids}: need at least one identity")
    if per_id < 1:
        raise UsageError(f"--per-id {per_id}: need at least one image per identity")


# --------------------------------------------------------------------------- evaluate / report


@cli.command("evaluate")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), help="Dataset folder to score.")
@click.option("--generator", help="Sample this generator first (with --run, --ids, --per-id) and score the samples.")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), help="Trained run of --generator.")
@click.option("--ids", default=100, show_default=True, help="With --generator: identities to sample.")
@click.option("--per-id", default=10, show_default=True, help="With --generator: images per identity.")
@click.option("--reference", "reference_dir", type=click.Path(path_type=Path), help="Real/reference dataset folder.")
@click.option("--metrics", "metric_specs", default="summary", show_default=True,
              help="Comma-separated metric names (NAME[:OPTION]).")
@click.option("--embedder", help="Face embedder NAME[:OPTION], e.g. dlib:aligned, iresnet:r50:/w/backbone.pth.")
@click.option("--features", help="Feature space for distribution metrics (default: each metric's own).")
@click.option("--bench", "benches", multiple=True, type=click.Path(path_type=Path),
              help="Verification benchmark file (repeatable).")
@click.option("-o", "options", multiple=True, metavar="METRIC.KEY=VALUE", help="Option for one metric.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Folder for metrics.json, per_identity.parquet, figures.")
@click.option("--seed", default=0, show_default=True)
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable images and list them.")
@click.option("--no-cache", is_flag=True, help="Recompute embeddings even when cached.")
@click.option("--cache-dir", type=click.Path(path_type=Path),
              help="Embedding cache (default $FSBENCH_CACHE or ~/.cache/fsbench).")
@json_option
def evaluate_cmd(dataset_dir, generator, run_dir, ids, per_id, reference_dir, metric_specs, embedder, features,
                 benches, options, out_dir, seed, skip_bad, no_cache, cache_dir, as_json) -> None:
    """Score a dataset (or a generator's samples) with metric plugins.

    \b
    Examples:
      fsbench evaluate --dataset syn --embedder dlib:aligned --metrics cst,sep,iou --reference real
      fsbench evaluate --generator vigface --run runs/vig --embedder iresnet:r50:w.pth --metrics sep,cst
    """
    from fsbench.evaluate_run import run_evaluation

    result = run_evaluation(
        dataset_dir=dataset_dir, generator=generator, run_dir=run_dir, ids=ids, per_id=per_id,
        reference_dir=reference_dir, metric_specs=metric_specs, embedder=embedder, features=features,
        benches=list(benches), metric_options=parse_overrides(options), out_dir=out_dir, seed=seed,
        skip_bad=skip_bad, use_cache=not no_cache, cache_dir=cache_dir,
    )
    ui.emit(result.to_json(), as_json=as_json, table=result.table())
    if not as_json:
        for note in result.notes():
            ui.out.print(f"[dim]note:[/dim] {note}", soft_wrap=True)
        ui.out.print(f"saved {result.out_dir}/metrics.json")


@cli.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Report folder.")
@click.option("--title", default="fsbench comparison", show_default=True)
@json_option
def report_cmd(runs: tuple[Path, ...], out_dir: Path, title: str, as_json: bool) -> None:
    """Compare evaluation folders in one table (Markdown, CSV) with figures.

    \b
    Example:
      fsbench report eval/vigface eval/segtex eval/real --out reports/2026-11
    """
    from fsbench.report.compare import write_report

    report = write_report(list(runs), out_dir, title=title)
    ui.emit(report.to_json(), as_json=as_json, table=report.table())
    if not as_json:
        ui.out.print(f"wrote {report.markdown}")


@cli.command("demo")
@click.option("--out", "out_dir", default=Path("demo-out"), show_default=True, type=click.Path(path_type=Path))
@click.option("--ids", default=40, show_default=True, help="Identities per scored dataset.")
@click.option("--per-id", default=6, show_default=True, help="Images per identity of the scored datasets.")
@click.option("--train-ids", default=500, show_default=True, help="Identities the demo's FR model trains on.")
@click.option("--seed", default=0, show_default=True)
@json_option
def demo_cmd(out_dir: Path, ids: int, per_id: int, train_ids: int, seed: int, as_json: bool) -> None:
    """Run the whole pipeline on the embedded face world, on CPU, in a few minutes.

    Renders a training world with verification benchmarks, trains a tiny face-recognition
    model on it, then scores a "real" and two "synthetic" sets of new identities with it
    (identity, distribution and verification metrics) and writes a comparison report.
    Running it again resumes and reuses what is already there.

    \b
    Example:
      fsbench demo --out demo-out
    """
    from fsbench.demo import run_demo

    report = run_demo(out_dir, ids=ids, per_id=per_id, seed=seed, train_ids=train_ids)
    ui.emit(report.to_json(), as_json=as_json, table=report.table())
    if not as_json:
        ui.out.print(f"wrote {report.markdown}")


# --------------------------------------------------------------------------- entry point

_plugin_commands_added = False


def get_cli() -> click.Group:
    """The command group with every plugin's commands added (once)."""
    global _plugin_commands_added
    if not _plugin_commands_added:
        from fsbench.registry import get_registry

        get_registry().add_commands(cli)
        _plugin_commands_added = True
    return cli


def main(argv: list[str] | None = None) -> None:
    try:
        group = get_cli()
    except FsbenchError as exc:  # a broken plugin set-up: say which, no traceback
        ui.err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        sys.exit(exc.exit_code)
    group.main(args=argv, prog_name="fsbench")


if __name__ == "__main__":  # pragma: no cover
    main()

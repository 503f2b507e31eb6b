"""The `fsbench` command line: parses options, calls the library, prints tables or JSON.

No logic of its own lives here. Plugins add commands through `fsbench_register_commands`
(`fsbench data make procedural`, `fsbench verify`, `fsbench fid` come from plugins).
Expected mistakes (`fsbench.errors.FsbenchError`), file-system errors (a read-only or full
disk, an `--out` that is a file: any OSError) and click's usage errors print one line on
stderr and exit 2; with `--json` on the command line, stdout gets exactly one JSON object
``{"error": ..., "exit_code": 2}`` as well. Any other exception is a bug: its traceback stays.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

import click

import fsbench
from fsbench import ui
from fsbench.errors import FsbenchError, UsageError

EPILOG_WIDTH = 100
SHEET_MAX = 1000  # rows or columns of a contact sheet (`data show`)


_JSON_META = "fsbench.json"  # ctx.meta key: was --json on the command line?
_OUTPUT_OPTIONS = ("--out", "--run", "--run-dir", "--cache-dir")  # named when an OSError names no file


def _wants_json(args: list[str]) -> bool:
    """`--json` among the options (before a `--`): set before parsing, so that even a wrong
    option value or a missing option answers with one JSON object."""
    for a in args:
        if a == "--":
            return False
        if a == "--json":
            return True
    return False


def _option_value(args: list[str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """The first of `names` given on the command line, with its value (``--out X``, ``--out=X``)."""
    for i, a in enumerate(args):
        if a == "--":
            break
        name, eq, value = a.partition("=")
        if name in names:
            if eq:
                return name, value
            if i + 1 < len(args):
                return name, args[i + 1]
    return None


def os_error_message(exc: OSError, args: list[str] | None = None) -> str:
    """`<path>: <reason>` for an OSError. A write to a full disk names no file (``os.write``
    on a descriptor): then the output option of the command line is named instead."""
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    if exc.filename is not None:
        where = os.fsdecode(exc.filename)
        if isinstance(exc, FileExistsError) and not os.path.isdir(where):
            reason += ", and is not a folder"  # `--out FILE` where a folder is made
        if exc.filename2 is not None:
            where += f" -> {os.fsdecode(exc.filename2)}"
        return f"{where}: {reason}"
    given = _option_value(args or [], _OUTPUT_OPTIONS)
    if given is not None:
        return f"{given[0]} {given[1]}: {reason}"
    return reason


def fail(ctx: click.Context, message: str, exit_code: int = 2) -> None:
    """The one way a command fails: `error: <message>` on stderr (printed literally: no rich
    markup or emoji codes in file names), the JSON object on stdout under --json, exit code."""
    ui.error(message)
    if ctx.meta.get(_JSON_META):
        print(ui.dumps({"error": message, "exit_code": exit_code}), flush=True)
    ctx.exit(exit_code)


def _usage_message(exc: click.ClickException) -> str:
    message = exc.format_message()
    sub = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and sub is not None:
        message += f" (see `{sub.command_path} --help`)"
    return message


class FsbenchGroup(click.Group):
    """A click group that reports expected failures as `error: <message>` and exit code 2:
    FsbenchError, OSError (a file-system error: read-only, full disk, a file where a folder
    should be) and click's usage errors, each in one line. Other exceptions are bugs and
    keep their traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            ctx.meta[_JSON_META] = _wants_json(list(args))
            ctx.meta["fsbench.args"] = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:  # `fsbench --bogus`: before any sub-command
            fail(ctx, _usage_message(exc), 2)
            raise  # pragma: no cover - fail() exits

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FsbenchError as exc:
            fail(ctx, str(exc), exc.exit_code)
        except click.ClickException as exc:
            fail(ctx, _usage_message(exc), 2)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `fsbench ... | head`: click quiets it
                raise
            fail(ctx, os_error_message(exc, ctx.meta.get("fsbench.args")), 2)


def parse_overrides(pairs: tuple[str, ...], option: str = "-o") -> dict[str, str]:
    """`key=value` strings -> dict (`fsbench.options.parse_pairs`); the generator or metric
    type-checks the values through its options schema."""
    from fsbench.options import parse_pairs

    return parse_pairs(pairs, option)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")
overwrite_option = click.option("--overwrite", is_flag=True,
                                help="Replace the results an earlier run wrote in --out (its stale figures too).")
keep_going_option = click.option("--keep-going", is_flag=True,
                                 help="Exit 0 when a metric fails (the others' results are saved either way).")


def _metric_failures(failed: dict[str, str], keep_going: bool, where: Path | str) -> None:
    """Metrics that failed (the others' results are saved): exit 1 with their reasons on stderr,
    or with --keep-going a warning and exit 0."""
    if not failed:
        return
    reasons = "; ".join(f"{name}: {(reason.strip().splitlines() or ['?'])[0]}" for name, reason in failed.items())
    message = f"{len(failed)} metric{'s' * (len(failed) > 1)} failed ({reasons}); the other results are saved in {where}"
    if keep_going:
        ui.warn(message + " (--keep-going)")
        return
    ui.error(message + "; --keep-going exits 0 anyway")
    click.get_current_context().exit(1)


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
      fsbench data make procedural --out world --ids 100 --per-id 10 --benchmark --bench-pairs 600
    """


@data_cmd.command("info")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable images and list them.")
@json_option
def data_info_cmd(root: Path, skip_bad: bool, as_json: bool) -> None:
    """Check a dataset folder and describe it (identities, images, size, fingerprint).

    Every image is decoded completely, and every item's companion files (masks, regions)
    must exist; a problem is one line naming the file and exit code 2, or with --skip-bad
    a list of what was left out.

    \b
    Example:
      fsbench data info world --json
    """
    from fsbench.data import FaceDataset
    from fsbench.data.check import decode_all, missing_aux
    from fsbench.errors import DatasetError

    ds = FaceDataset.open(root, skip_bad=skip_bad)
    decode_all(ds)  # truncated files pass a header check: decode everything once
    missing = missing_aux(ds)
    if missing and not skip_bad:
        aux, item = missing[0]
        more = f"; {len(missing)} companion files are missing in all (--skip-bad lists them)" if len(missing) > 1 else ""
        raise DatasetError(root / aux, f"missing: the companion file of {item}{more}")
    info = ds.describe()
    info["skipped"] = [list(s) for s in ds.skipped]
    info["missing_aux"] = [[aux, item] for aux, item in missing]
    counts = info["images_per_identity"]
    table = ui.table(
        f"dataset {root}",
        ["identities", "images", "size (HxW)", "per identity (min/mean/max)", "skipped", "fingerprint"],
        [[info["identities"], info["images"], "x".join(map(str, info["image_size"])),
          f"{counts['min']}/{ui.format_number(counts['mean'])}/{counts['max']}", len(info["skipped"]), info["fingerprint"]]],
    )
    ui.emit(info, as_json=as_json, table=table)
    for path, reason in info["skipped"]:
        ui.warn(f"skipped {root / path}: {reason}")
    for aux, item in missing:
        ui.warn(f"missing {root / aux}: the companion file of {item}")


@data_cmd.command("pairs")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="pairs.csv to write.")
@click.option("--pairs", "n_pairs", default=6000, show_default=True, type=int,
              help="Pairs in all: half genuine, half impostor, a multiple of 20.")
@click.option("--folds", default=10, show_default=True, type=click.IntRange(2, 100), help="Identity-disjoint folds.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@json_option
def data_pairs_cmd(root: Path, out: Path, n_pairs: int, folds: int, seed: int, as_json: bool) -> None:
    """Verification pairs (LFW-style folds) over any dataset, for `fsbench verify --pairs`.

    \b
    Example:
      fsbench data pairs syn --out syn-pairs.csv --pairs 6000
      fsbench verify --pairs syn-pairs.csv --root syn
    """
    from fsbench.data import FaceDataset
    from fsbench.data.pairs import make_pairs
    from fsbench.data.writer import write_csv

    ds = FaceDataset.open(root)
    rows = make_pairs(ds, n_pairs, seed, folds)
    tmp = out.with_name(f".{out.name}.tmp")
    write_csv(tmp, rows)
    tmp.replace(out)
    info = {"out": str(out), "pairs": len(rows), "genuine": sum(r["same"] for r in rows), "folds": folds,
            "identities": ds.num_identities, "seed": seed}
    ui.emit(info, as_json=as_json, table=ui.table(f"pairs of {root}", list(info), [list(info.values())]))


@data_cmd.command("show")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="PNG file to write.")
@click.option("--ids", default=8, show_default=True, type=click.IntRange(1, SHEET_MAX),
              help=f"Identities (rows, 1 to {SHEET_MAX}; at most what the dataset has).")
@click.option("--per-id", default=8, show_default=True, type=click.IntRange(1, SHEET_MAX),
              help=f"Images per identity (columns, 1 to {SHEET_MAX}; at most what the dataset has).")
@click.option("--masks", is_flag=True, help="Overlay segmentation masks (datasets with masks/).")
@json_option
def data_show_cmd(root: Path, out: Path, ids: int, per_id: int, masks: bool, as_json: bool) -> None:
    """Draw a contact sheet: identities in rows, their images in columns.

    \b
    Example:
      fsbench data show world --out sheet.png --masks
    """
    from fsbench.data import FaceDataset
    from fsbench.report.contact_sheet import contact_sheet

    ds = FaceDataset.open(root)
    # the sheet is allocated whole: never wider or taller than the dataset can fill
    ids, per_id = min(ids, ds.num_identities), min(per_id, int(ds.counts().max()))
    path = contact_sheet(ds, out, n_ids=ids, per_id=per_id, overlay_masks=masks)
    if as_json:
        ui.emit({"out": str(path)}, as_json=True)
    else:
        ui.out.print(f"wrote {path}", soft_wrap=True, markup=False)


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
    from fsbench.train import dist

    try:
        train_generator(gen, FaceDataset.open(data_dir), run_dir, preset, cfg_overrides, stage=stage, until=until,
                        show_progress=not as_json)
    finally:
        dist.shutdown()  # leave torchrun's process group before exit (gloo aborts a process that does not)
    if not dist.detect().is_main:
        return  # under torchrun only rank 0 reports
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


@runs_cmd.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the exported run.")
@click.option("--note", default="", help="The commands that made the run, for its recipe.json.")
@click.option("--sample-default", "sample_defaults", multiple=True, metavar="KEY=VALUE",
              help="A sampling option the exported run recommends (-o on sample still wins).")
@json_option
def runs_export_cmd(run_dir: Path, out: Path, note: str, sample_defaults: tuple[str, ...], as_json: bool) -> None:
    """Export a finished run with weights only (no optimizer state): what a plugin ships.

    \b
    Example:
      fsbench runs export runs/vig --out generators/vigface/embedded --note "fsbench train vigface ..."
    """
    from fsbench.runs import export_run

    recipe = export_run(run_dir, out, note, parse_overrides(sample_defaults, "--sample-default"))
    rows = [[name, s["steps"], s["wall_s"], s["bytes"], s["checkpoint_sha256"][:12]] for name, s in recipe["stages"].items()]
    ui.emit(recipe, as_json=as_json, table=ui.table(f"exported {run_dir} -> {out}",
                                                    ["stage", "steps", "wall s", "bytes", "sha256"], rows))


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
@click.option("--embeddings", "embeddings", type=click.Path(path_type=Path), metavar="FILE.npz",
              help="Score precomputed vectors instead of images: an .npz with embeddings (N, D) and labels (N,), "
                   "optionally reference_embeddings, reference_labels, serfiq.")
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
@overwrite_option
@keep_going_option
@click.option("--seed", default=0, show_default=True)
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable images and list them.")
@click.option("--no-cache", is_flag=True, help="Recompute embeddings even when cached.")
@click.option("--cache-dir", type=click.Path(path_type=Path),
              help="Embedding cache (default $FSBENCH_CACHE or ~/.cache/fsbench).")
@json_option
def evaluate_cmd(dataset_dir, generator, run_dir, ids, per_id, reference_dir, metric_specs, embedder, features,
                 benches, options, out_dir, seed, skip_bad, no_cache, cache_dir, as_json, overwrite=False,
                 keep_going=False, embeddings=None) -> None:
    """Score a dataset (or a generator's samples) with metric plugins.

    A folder already holding results is refused unless --overwrite; a metric that fails
    exits 1 (the others' results are saved) unless --keep-going.

    \b
    Examples:
      fsbench evaluate --dataset syn --embedder dlib:aligned --metrics cst,sep,iou --reference real
      fsbench evaluate --generator vigface --run runs/vig --embedder iresnet:r50:w.pth --metrics sep,cst
      fsbench evaluate --embeddings emb.npz --metrics cst,sep,iou   # vectors computed elsewhere
    """
    from fsbench.evaluate_run import evaluation_folder, run_evaluation

    with evaluation_folder(overwrite) as folder:
        result = run_evaluation(
            dataset_dir=dataset_dir, generator=generator, run_dir=run_dir, ids=ids, per_id=per_id,
            reference_dir=reference_dir, metric_specs=metric_specs, embedder=embedder, features=features,
            benches=list(benches), metric_options=parse_overrides(options), out_dir=out_dir, seed=seed,
            skip_bad=skip_bad, use_cache=not no_cache, cache_dir=cache_dir, results_folder=folder, embeddings=embeddings,
        )
    ui.emit(result.to_json(), as_json=as_json, table=result.table())
    if not as_json:
        for note in result.notes():
            ui.note(note)
        ui.out.print(f"saved {result.out_dir}/metrics.json")
    _metric_failures(result.errors, keep_going, result.out_dir)


@cli.command("sweep")
@click.argument("generator")
@click.option("--vary", required=True, metavar="KEY=V1,V2,...", help="The sampling option to vary and its values.")
@click.option("--run", "--run-dir", "run_dir", type=click.Path(path_type=Path), help="Trained run (default: embedded).")
@click.option("--ids", default=50, show_default=True, type=click.IntRange(1))
@click.option("--per-id", default=10, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--metrics", "metric_specs", default="iou", show_default=True)
@click.option("--reference", "reference_dir", type=click.Path(path_type=Path), help="Real set (iou needs one).")
@click.option("--embedder", help="Face embedder (default: the judge for embedded-world data, else dlib).")
@click.option("-o", "options", multiple=True, metavar="KEY=VALUE", help="A sampling option held fixed.")
@click.option("--out", "out_dir", default=Path("sweep"), show_default=True, type=click.Path(path_type=Path))
@overwrite_option
@keep_going_option
@json_option
def sweep_cmd(generator, vary, run_dir, ids, per_id, seed, metric_specs, reference_dir, embedder, options, out_dir,
              as_json, overwrite=False, keep_going=False) -> None:
    """Vary one sampling option and score each sample set: VIGFace's Table 1 with guidance and iou.

    \b
    Example:
      fsbench sweep vigface --vary guidance=0.5,1,1.5,2,2.5,3 --reference world --metrics iou
    """
    from fsbench.results_folder import ResultsFolder
    from fsbench.sweep import sweep

    # each value's samples (VALUE/samples/) are a cache: --overwrite keeps them, so they are reused
    with ResultsFolder("sweep", overwrite=overwrite, markers=("*/metrics.json",), cache_dirs=("*/samples",),
                       path=out_dir) as folder:
        res = sweep(generator, vary, run_dir=run_dir, ids=ids, per_id=per_id, seed=seed, metrics=metric_specs,
                    reference=reference_dir, embedder=embedder, options=parse_overrides(options), out=out_dir,
                    results_folder=folder)
    title = f"{generator}: {res['vary']} sweep ({ids} ids x {per_id}, judge {(res['judge'] or {}).get('spec')})"
    rows = [[name, *vals.values()] for name, vals in res["table"].items()]
    ui.emit(res, as_json=as_json, table=ui.table(title, [res["vary"], *res["values"]], rows))
    failed = {f"{name} at {res['vary']}={value}": reason for value, errs in res["errors"].items()
              for name, reason in errs.items()}
    _metric_failures(failed, keep_going, out_dir)


@cli.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Report folder.")
@click.option("--title", default="fsbench comparison", show_default=True)
@overwrite_option
@json_option
def report_cmd(runs: tuple[Path, ...], out_dir: Path, title: str, as_json: bool, overwrite: bool = False) -> None:
    """Compare evaluation folders in one table (Markdown, CSV) with figures.

    \b
    Example:
      fsbench report eval/vigface eval/segtex eval/real --out reports/2026-11
    """
    from fsbench.report.compare import write_report
    from fsbench.results_folder import ResultsFolder

    with ResultsFolder("report", overwrite=overwrite, markers=("report.md", "results.csv")) as folder:
        report = write_report(list(runs), out_dir, title=title, results_folder=folder)
        ui.emit(report.to_json(), as_json=as_json, table=report.table())
        if not as_json:
            ui.out.print(f"wrote {report.markdown}")


@cli.command("demo")
@click.option("--out", "out_dir", default=Path("demo-out"), show_default=True, type=click.Path(path_type=Path))
@click.option("--ids", default=100, show_default=True, help="Identities of every set (scored, and trained on).")
@click.option("--per-id", default=8, show_default=True, help="Images per identity of every set.")
@click.option("--bench-pairs", default=1200, show_default=True, help="Pairs of each of the three benchmarks.")
@click.option("--seed", default=0, show_default=True)
@json_option
def demo_cmd(out_dir: Path, ids: int, per_id: int, bench_pairs: int, seed: int, as_json: bool) -> None:
    """Run the whole pipeline on the embedded face world, on CPU, in minutes.

    Renders a held-out real set of the embedded world (with its three verification
    benchmarks), a procedural set and a low-diversity one, samples VIGFace's and SegTex's
    embedded defaults, scores every set with the default judge (CST, DIV, SEP; IoU, leakage,
    FD, KID, PRDC against the real set), trains one tiny FR model per set for the gap to
    real (VIGFace Table 2), and writes the report (Markdown, HTML, CSV, LaTeX, figures) to
    OUT/report. Running it again reuses the sets, samples and models already there.

    \b
    Example:
      fsbench demo --out demo-out
    """
    from fsbench.demo import run_demo, summary_table

    report = run_demo(out_dir, ids=ids, per_id=per_id, seed=seed, bench_pairs=bench_pairs)
    ui.emit(report.to_json(), as_json=as_json, table=summary_table(report))
    if not as_json:
        ui.out.print(f"wrote {report.markdown} and {report.html}")


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
        ui.error(str(exc))
        if _wants_json(sys.argv[1:] if argv is None else list(argv)):
            print(ui.dumps({"error": str(exc), "exit_code": exc.exit_code}), flush=True)
        sys.exit(exc.exit_code)
    group.main(args=argv, prog_name="fsbench")


if __name__ == "__main__":  # pragma: no cover
    main()

"""`judge`: fsbench's default judge, a small IResNet shipped inside the package.

When `fsbench evaluate` or `fsbench verify` is given no ``--embedder`` (and neither
``FSBENCH_EMBEDDER`` nor a config file names one), data of the embedded procedural world is
scored by this embedder (`fsbench.judge.default_embedder` decides; photographs get dlib).
Every user scores with the same weights: ``judge_weights/backbone.pth`` beside this module,
with ``judge_weights/recipe.json`` saying how it was made (commands, world seed and size,
platform, wall time, sha256 of the weights, verification accuracy on the world's held-out
``lfw_like`` pairs).

Spec syntax::

    judge               the shipped weights
    judge:/path/DIR     a judge rebuilt by `fsbench judge build --out DIR`

The recipe uses fsbench's own commands only::

    fsbench data make procedural --out W --ids 1000 --per-id 8 --seed 9001 --benchmark --bench-pairs 600
    fsbench fr train --data W --run R --preset tiny

Identities are drawn from (world seed, identity index), so the seed-9001 world's people are
not those of any seed-0 world, the one generators train on. ``fsbench judge build --out DIR``
(or ``make judge``) repeats the recipe; the same seed trains the same weights only on the same
kind of machine (see the platform in recipe.json).

Loading and preprocessing are `iresnet`'s (weights read with ``torch.load(weights_only=True)``,
the architecture inferred from the state_dict, the antialiased bilinear resize FR training
used, pixels to [-1, 1]).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

import fsbench
from fsbench.errors import CheckpointError
from fsbench.judge import JUDGE_WORLD_SEED
from fsbench.plugins.embedders.iresnet import IResNetEmbedder

WEIGHTS_DIR = Path(__file__).with_name("judge_weights")
BACKBONE = "backbone.pth"
RECIPE = "recipe.json"

# The recipe `fsbench judge build` runs (and the shipped weights were made with).
DEFAULT_RECIPE: dict[str, Any] = {
    "world_seed": JUDGE_WORLD_SEED,
    "ids": 1000,
    "per_id": 8,
    "size": 112,
    "bench_pairs": 600,
    "preset": "tiny",
}


def read_recipe(folder: Path) -> dict[str, Any]:
    try:
        recipe = json.loads((Path(folder) / RECIPE).read_text())
    except (OSError, ValueError):
        return {}
    return recipe if isinstance(recipe, dict) else {}


class JudgeEmbedder(IResNetEmbedder):
    name = "judge"
    description = (f"fsbench's default judge: a small IResNet shipped with the package, trained on the "
                   f"procedural world's seed-{JUDGE_WORLD_SEED} identities (judge:DIR for a rebuilt one)")
    dim = 128
    input_size = (48, 48)

    def __init__(self, option: str | None = None) -> None:
        folder = Path(option).expanduser() if option else WEIGHTS_DIR
        if folder.is_file():
            folder = folder.parent
        weights = folder / BACKBONE
        if not weights.is_file():
            raise CheckpointError(weights, "missing: the judge's weights are not there; rebuild them with "
                                           "`fsbench judge build --out DIR` (or `make judge`)")
        super().__init__(str(weights))
        self.option = option
        self.folder = folder
        self.resize = "bilinear-aa"  # what `fsbench fr train` used on the world's 112 px images
        self.recipe = read_recipe(folder)
        self.description = (f"default judge {self.arch} {self.input_size[0]} px, weights {self.weights_id()}"
                            f"{'' if option is None else f' from {folder}'}")

    def cache_key(self) -> str:
        # The folder is left out on purpose: the same weights anywhere are the same judge.
        return f"judge-{self.arch}-{self.weights_id()}-{self.resize}{self.input_size[0]}"


# --------------------------------------------------------------------------- building


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _atomic_text(dst: Path, text: str) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, dst)


def world_digest(dataset: Any) -> str:
    """sha256 over every item's relative path, label and file bytes, in item order: the same
    world gives the same digest wherever the same JPEG encoder wrote it (all 64 hex digits of
    the images alone, where the dataset's fingerprint keeps 16 and also hashes the manifest;
    tests/test_procedural.py pins the pixels themselves)."""
    import hashlib

    h = hashlib.sha256()
    for it in dataset.items:
        h.update(f"{it.path}\t{it.label}\n".encode())
        h.update((Path(dataset.root) / it.path).read_bytes())
    return h.hexdigest()


def build_judge(out: Path, *, world_seed: int = JUDGE_WORLD_SEED, ids: int = 1000, per_id: int = 8,
                size: int = 112, bench_pairs: int = 600, preset: str = "tiny",
                overrides: dict[str, Any] | None = None, work: Path | None = None,
                show_progress: bool = True) -> dict[str, Any]:
    """Make the world, train the judge on it, verify it on the world's held-out lfw_like pairs,
    and write `out`/backbone.pth then `out`/recipe.json (each atomically; the recipe names the
    weights' sha256, so a half-finished rebuild is detectable). Returns the recipe."""
    from fsbench.data.pairs import read_bin_pairs
    from fsbench.hashing import sha256_of
    from fsbench.registry import get_registry
    from fsbench.train.device import compute_platform
    from fsbench.train.fr import train_fr
    from fsbench.verification import verify_embedder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fsbench-judge-") as tmp:
        work_dir = Path(work) if work is not None else Path(tmp)
        world, run_dir = work_dir / "world", work_dir / "run"
        t0 = time.perf_counter()
        dataset = get_registry().generator("procedural").make(
            None, ids, per_id, world, world_seed, size=size, benchmark=True, bench_pairs=bench_pairs, resume=True)
        world_s = time.perf_counter() - t0
        run = train_fr(dataset, run_dir, preset, overrides, show_progress=show_progress)
        staged = work_dir / "staged"
        staged.mkdir(exist_ok=True)
        shutil.copyfile(run.backbone, staged / BACKBONE)
        t0 = time.perf_counter()
        judge = JudgeEmbedder(str(staged))
        bench = world / "benchmarks" / "lfw_like" / "lfw_like.bin"
        res = verify_embedder(judge, read_bin_pairs(bench), flip=True)
        verify_s = time.perf_counter() - t0
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in run.config.items()}
        sha = sha256_of(staged / BACKBONE)
        recipe = {
            "judge": "judge",
            "weights_sha256": sha,
            "weights_id": sha[:12],
            "weights_bytes": (staged / BACKBONE).stat().st_size,
            "architecture": {"network": cfg["network"], "width": cfg["width"], "input_size": cfg["input_size"],
                             "embedding_size": cfg["embedding_size"], "resize": "bilinear-aa"},
            "world": {"generator": "procedural", "seed": world_seed, "ids": ids, "per_id": per_id, "size": size,
                      "images": len(dataset), "identities": f"0..{ids - 1} of world seed {world_seed}",
                      "content_sha256": world_digest(dataset), "bench_pairs": bench_pairs},
            "disjointness": (f"identities are drawn from (world seed, identity index): the seed-{world_seed} "
                             "world's people are other people than those of any seed-0 world, the one "
                             "generators train on (the demo also scores seeds 1..3)"),
            "commands": [
                f"fsbench data make procedural --out WORLD --ids {ids} --per-id {per_id} --size {size} "
                f"--seed {world_seed} --benchmark --bench-pairs {bench_pairs}",
                f"fsbench fr train --data WORLD --run RUN --preset {preset}"
                + "".join(f" -o {k}={v}" for k, v in (overrides or {}).items()),
                "cp RUN/backbone.pth OUT/backbone.pth",
            ],
            "rebuild": "fsbench judge build --out OUT   (make judge: into the package)",
            "fr_config": cfg,
            "training": {"steps": run.steps, "seconds": round(run.seconds, 1), "final_loss": round(run.loss, 4)},
            "verification": {"benchmark": "lfw_like", "pairs": res.pairs, "folds": res.folds, "flip": True,
                             "accuracy": round(res.accuracy, 4), "std": round(res.std, 4),
                             "tar_at_far_1e-3": round(res.tar_at_far, 4), "auc": round(res.auc, 4),
                             "identities": "held out (indices >= 10,000,000 of the same seed)"},
            "wall_seconds": {"world": round(world_s, 1), "train": round(run.seconds, 1),
                             "verify": round(verify_s, 1), "total": round(time.perf_counter() - started, 1)},
            "platform": {**compute_platform(), "python": sys.version.split()[0], "system": platform.system(),
                         "cpus": os.cpu_count()},
            "fsbench_version": fsbench.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _atomic_copy(staged / BACKBONE, out / BACKBONE)
        _atomic_text(out / RECIPE, json.dumps(recipe, indent=2) + "\n")
    return recipe


# --------------------------------------------------------------------------- commands


@click.group("judge")
def judge_group() -> None:
    """The default judge: the IResNet that scores embedded-world data when no --embedder is given."""


@judge_group.command("build")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for backbone.pth and recipe.json (the package's is plugins/embedders/judge_weights).")
@click.option("--seed", "world_seed", default=JUDGE_WORLD_SEED, show_default=True, type=int,
              help="World seed of the judge's identities (not 0: generators train on seed 0).")
@click.option("--ids", default=DEFAULT_RECIPE["ids"], show_default=True, type=int, help="Training identities.")
@click.option("--per-id", default=DEFAULT_RECIPE["per_id"], show_default=True, type=int, help="Images per identity.")
@click.option("--preset", default=DEFAULT_RECIPE["preset"], show_default=True, help="`fsbench fr train` preset.")
@click.option("-o", "overrides", multiple=True, metavar="KEY=VALUE", help="Override an fr preset key.")
@click.option("--work", type=click.Path(path_type=Path),
              help="Keep the world and the training run here (default: a temporary folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the recipe as one JSON object on stdout.")
def judge_build_cmd(out_dir: Path, world_seed: int, ids: int, per_id: int, preset: str, overrides: tuple[str, ...],
                    work: Path | None, as_json: bool) -> None:
    """Rebuild the judge: make its world, train it, verify it, write backbone.pth + recipe.json.

    Runs `fsbench data make procedural` (seed 9001, 1,000 x 8 images, held-out lfw_like pairs)
    and `fsbench fr train --preset tiny` through their Python functions: a few CPU minutes.

    \b
    Examples:
      fsbench judge build --out judge-new
      fsbench evaluate --dataset world --metrics sep,cst --embedder judge:judge-new
      make judge    # into the package (plugins/embedders/judge_weights)
    """
    from fsbench import ui
    from fsbench.errors import UsageError
    from fsbench.train.config import parse_overrides

    if world_seed == 0:
        raise UsageError("--seed 0 is the world generators train on; the judge needs identities they never see")
    recipe = build_judge(out_dir, world_seed=world_seed, ids=ids, per_id=per_id, preset=preset,
                         overrides=parse_overrides(overrides), work=work, show_progress=not as_json)
    v = recipe["verification"]
    table = ui.table("judge build", ["field", "value"], [
        ["out", str(out_dir)], ["weights", f"{recipe['weights_id']} ({recipe['weights_bytes']:,} bytes)"],
        ["world", f"seed {world_seed}, {ids} x {per_id}"],
        ["lfw_like accuracy", f"{ui.format_number(v['accuracy'])} ± {ui.format_number(v['std'])}"],
        ["wall time (s)", recipe["wall_seconds"]["total"]],
    ])
    ui.emit(recipe, as_json=as_json, table=table)


@judge_group.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def judge_info_cmd(as_json: bool) -> None:
    """Which judge ships with this install: its weights hash and recipe.

    \b
    Example:
      fsbench judge info --json
    """
    from fsbench import ui
    from fsbench.hashing import weights_id

    weights = WEIGHTS_DIR / BACKBONE
    recipe = read_recipe(WEIGHTS_DIR)
    payload = {"path": str(weights), "weights_id": weights_id(weights) if weights.is_file() else None,
               "bytes": weights.stat().st_size if weights.is_file() else None, "recipe": recipe}
    rows = [["path", payload["path"]], ["weights", payload["weights_id"]], ["bytes", payload["bytes"]],
            ["world seed", recipe.get("world", {}).get("seed")],
            ["lfw_like accuracy", recipe.get("verification", {}).get("accuracy")]]
    ui.emit(payload, as_json=as_json, table=ui.table("the default judge", ["field", "value"], rows))


# --------------------------------------------------------------------------- hooks


@fsbench.hookimpl
def fsbench_register_embedders():
    return [JudgeEmbedder]


@fsbench.hookimpl
def fsbench_register_commands(commands):
    commands.add(judge_group)

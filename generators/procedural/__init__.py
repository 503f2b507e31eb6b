"""The embedded procedural face world: a generator that needs no training.

Identities are parameter vectors drawn from ``(seed, identity index)``; each image adds a
nuisance drawn from ``(seed, identity index, image index)``: pose (a 2.5-D warp of a
ray-cast head), expression, lighting, background, glasses and hats, blur, noise, JPEG
quality, crop jitter and age. Every image comes with a CelebAMask-HQ-style class map under
``masks/`` and five region crops under ``regions/``; ``--benchmark`` adds verification
pairs over held-out identities (see `generators.procedural.bench`).

Command line::

    fsbench data make procedural --out world --ids 100 --per-id 10 --benchmark
    fsbench sample procedural --out world --ids 100 --per-id 10 -o size=256

Presets (``Procedural.presets``):

- ``tiny``: 50 identities x 10 images at 112 px, 600 benchmark pairs: seconds on a CPU.
- ``paper``: 10,000 identities x 50 images at 112 px (CASIA-WebFace's scale: 10,575 x ~47),
  6,000 pairs per benchmark as LFW, CFP-FP and AgeDB-30 have.

The module is cheap to import: numpy and PIL are loaded only when something is rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import fsbench
from fsbench.api import Generator


class Procedural(Generator):
    """Procedural faces with segmentation maps, region crops and held-out verification pairs."""

    name = "procedural"
    description = "Embedded procedural face world (no training; masks, regions, benchmarks)."
    needs_training = False
    presets = {
        "tiny": {"n_ids": 50, "per_id": 10, "size": 112, "masks": True, "region_size": 64, "bench_pairs": 600},
        "paper": {"n_ids": 10_000, "per_id": 50, "size": 112, "masks": True, "region_size": 64, "bench_pairs": 6000},
    }

    def sample(
        self,
        run_dir: Path | None = None,
        n_ids: int = 50,
        per_id: int = 10,
        out_dir: Path | None = None,
        seed: int = 0,
        *,
        size: int = 112,
        masks: bool = True,
        region_size: int = 64,
        resume: bool = False,
        overwrite: bool = False,
        benchmark: bool = False,
        bench_pairs: int = 6000,
        workers: int | None = None,
        **strengths: Any,
    ):
        """Write the dataset (resumable); extra keyword options override nuisance strengths."""
        from fsbench.errors import UsageError
        from generators.procedural.make import make_dataset, with_strengths

        if out_dir is None:
            raise UsageError("procedural: an output folder (--out) is required")
        return make_dataset(
            Path(out_dir), n_ids=int(n_ids), per_id=int(per_id), seed=int(seed), size=int(size),
            masks=_as_bool(masks), region_size=int(region_size), resume=_as_bool(resume),
            overwrite=_as_bool(overwrite), benchmark=_as_bool(benchmark), bench_pairs=int(bench_pairs),
            workers=None if workers is None else int(workers), strengths=with_strengths(**strengths),
        )


def _as_bool(value: Any) -> bool:
    """`-o masks=false` arrives as a string."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        from fsbench.errors import UsageError

        raise UsageError(f"procedural: expected true/false, got {value!r}")
    return bool(value)


@click.command("procedural")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Dataset folder to write.")
@click.option("--ids", "n_ids", default=50, show_default=True, type=int, help="Training identities.")
@click.option("--per-id", default=10, show_default=True, type=int, help="Images per identity.")
@click.option("--size", default=112, show_default=True, type=int, help="Image side in pixels (>= 32; 256 for SegTex).")
@click.option("--seed", default=0, show_default=True, type=int, help="World seed: same seed, same bytes.")
@click.option("--masks/--no-masks", default=True, show_default=True, help="Write masks/ and regions/.")
@click.option("--benchmark", is_flag=True, help="Also write lfw_like, cfp_fp_like, agedb_like pairs (held-out identities).")
@click.option("--bench-pairs", default=6000, show_default=True, type=int, help="Pairs per benchmark (10 folds).")
@click.option("--workers", type=int, default=None, help="Render processes (default: up to 2).")
@click.option("--resume", is_flag=True, help="Continue an interrupted or finished dataset.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
def make_procedural_cmd(out_dir: Path, n_ids: int, per_id: int, size: int, seed: int, masks: bool, benchmark: bool,
                        bench_pairs: int, workers: int | None, resume: bool, overwrite: bool, as_json: bool) -> None:
    """Render the procedural face world: images, masks, region crops, benchmarks.

    \b
    Example:
      fsbench data make procedural --out world --ids 100 --per-id 10 --benchmark
    """
    import time

    from fsbench import ui

    t0 = time.perf_counter()
    ds = Procedural().sample(None, n_ids, per_id, out_dir, seed, size=size, masks=masks, resume=resume,
                             overwrite=overwrite, benchmark=benchmark, bench_pairs=bench_pairs, workers=workers)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {
        "out": str(out_dir), "identities": ds.num_identities, "images": len(ds), "size": size,
        "masks": masks, "seed": seed, "seconds": round(seconds, 2),
    }
    if benchmark:
        result["benchmarks"] = {name: str(Path(out_dir) / "benchmarks" / name / f"{name}.bin")
                                for name in ("lfw_like", "cfp_fp_like", "agedb_like")}
    rows = [(k, v if not isinstance(v, dict) else ", ".join(v)) for k, v in result.items()]
    ui.emit(result, as_json=as_json, table=ui.table("procedural dataset", ("field", "value"), rows))


@fsbench.hookimpl
def fsbench_register_generators():
    return [Procedural]


@fsbench.hookimpl
def fsbench_register_commands(cli):
    cli.commands["data"].commands["make"].add_command(make_procedural_cmd)

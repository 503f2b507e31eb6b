"""The embedded procedural face world: a generator that needs no training.

Identities are parameter vectors drawn from ``(seed, identity index)``; each image adds a
nuisance drawn from ``(seed, identity index, image index)``: pose (a 2.5-D warp of a
ray-cast head), expression, lighting, background, glasses and hats, blur, noise, JPEG
quality, crop jitter and age. Every image comes with a CelebAMask-HQ-style class map under
``masks/`` and five region crops under ``regions/``; ``--benchmark`` adds verification
pairs over held-out identities (see `generators.procedural.bench`).

Command line::

    fsbench data make procedural --out world --ids 100 --per-id 10 --benchmark --bench-pairs 600
    fsbench sample procedural --out world --ids 100 --per-id 10 -o size=256

Presets (``Procedural.presets``):

- ``tiny``: 50 identities x 10 images at 112 px, 600 benchmark pairs: seconds on a CPU.
- ``paper``: 10,000 identities x 50 images at 112 px (CASIA-WebFace's scale: 10,575 x ~47),
  6,000 pairs per benchmark as LFW, CFP-FP and AgeDB-30 have.

The module is cheap to import: numpy and PIL are loaded only when something is rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

import fsbench
from fsbench.api import Generator
from fsbench.generators.procedural.params import Strengths
from fsbench.options import opt, parse


@dataclass(frozen=True)
class WorldConfig:
    """The world's image format, shared by every image of a procedural dataset (its `Config`)."""

    size: int = opt(112, "image side in pixels (256 for SegTex)", min=32, max=512)
    masks: bool = opt(True, "write masks/ and regions/ (SegTex trains on them)")
    region_size: int = opt(64, "side of the region crops in pixels", min=8, max=512)
    first_id: int = opt(0, "index of the first identity (one seed's worlds share identities)", min=0)


@dataclass(frozen=True)
class MakeOptions:
    """`Procedural.make`'s own options; any other ``-o`` key is a nuisance strength.

    Sizes carry no range here: `make.check_options` refuses them naming the CLI flag.
    """

    size: int = opt(112, "image side in pixels (32 to 512; 256 for SegTex)")
    masks: bool = opt(True, "write masks/ and regions/")
    region_size: int = opt(64, "side of the region crops in pixels (>= 8)")
    resume: bool = opt(False, "continue an interrupted or finished dataset")
    overwrite: bool = opt(False, "replace an existing dataset")
    benchmark: bool = opt(False, "also write lfw_like, cfp_fp_like, agedb_like pairs")
    bench_pairs: int = opt(6000, "pairs per benchmark (a multiple of 20)")
    workers: int | None = opt(None, "render processes (none: up to 2; 0 or 1: in this process)", min=0)


class Procedural(Generator):
    """Procedural faces with segmentation maps, region crops and held-out verification pairs."""

    name = "procedural"
    description = "Embedded procedural face world (no training; masks, regions, benchmarks)."
    Config = WorldConfig
    SampleOptions = Strengths  # -o yaw_sd=4 -o profile_p=0 ...: the nuisance strengths
    # The world's format is the same at every scale (the scale is --ids / --per-id): tiny is
    # `fsbench data make procedural`'s 50 x 10, paper CASIA-WebFace's 10,000 x 50.
    presets = {"tiny": {}, "paper": {}}
    embedded_world = True

    def sampler(self, run: Any, config: WorldConfig, options: Strengths) -> Any:
        from fsbench.generators.procedural.sampler import ProceduralSampler

        return ProceduralSampler(config, options)

    def make(
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
        """Write a world (resumable) in worker processes, with benchmarks on request: what
        `fsbench data make procedural` runs. Extra keyword options override nuisance strengths.

        Options may arrive as strings (``-o masks=false``): `MakeOptions` converts them.
        """
        from fsbench.errors import UsageError
        from fsbench.generators.procedural.make import make_dataset, with_strengths

        if out_dir is None:
            raise UsageError("procedural: an output folder (--out) is required")
        given = {"size": size, "masks": masks, "region_size": region_size, "resume": resume, "overwrite": overwrite,
                 "benchmark": benchmark, "bench_pairs": bench_pairs, "workers": workers}
        o = parse(MakeOptions, given, where="procedural")
        return make_dataset(
            Path(out_dir), n_ids=int(n_ids), per_id=int(per_id), seed=int(seed), size=o.size, masks=o.masks,
            region_size=o.region_size, resume=o.resume, overwrite=o.overwrite, benchmark=o.benchmark,
            bench_pairs=o.bench_pairs, workers=o.workers, strengths=with_strengths(**strengths),
        )


@click.command("procedural")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Dataset folder to write.")
@click.option("--ids", "n_ids", default=50, show_default=True, type=int, help="Training identities.")
@click.option("--per-id", default=10, show_default=True, type=int, help="Images per identity.")
@click.option("--size", default=112, show_default=True, type=int, help="Image side in pixels (>= 32; 256 for SegTex).")
@click.option("--seed", default=0, show_default=True, type=int, help="World seed: same seed, same bytes.")
@click.option("--masks/--no-masks", default=True, show_default=True, help="Write masks/ and regions/.")
@click.option("--benchmark", is_flag=True,
              help="Also write lfw_like, cfp_fp_like, agedb_like verification pairs over held-out identities under "
                   "OUT/benchmarks/: three sets of --bench-pairs pairs, two images per pair (36,000 images at the "
                   "default), whatever --ids; a line on stderr says how many before rendering.")
@click.option("--bench-pairs", default=6000, show_default=True, type=int,
              help="Pairs per benchmark (10 folds; a multiple of 20), 2 images each; the same for any --ids.")
@click.option("--workers", type=int, default=None, help="Render processes (default: up to 2).")
@click.option("--resume", is_flag=True, help="Continue an interrupted or finished dataset.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
def make_procedural_cmd(out_dir: Path, n_ids: int, per_id: int, size: int, seed: int, masks: bool, benchmark: bool,
                        bench_pairs: int, workers: int | None, resume: bool, overwrite: bool, as_json: bool) -> None:
    """Render the procedural face world: images, masks, region crops, benchmarks.

    The benchmarks do not scale with --ids: each of the three renders two images per pair
    (36,000 images in all at the default 6,000 pairs, LFW's size); a line says so first.

    \b
    Examples:
      fsbench data make procedural --out world --ids 100 --per-id 10 --benchmark --bench-pairs 600
      fsbench data make procedural --out world --ids 1000 --per-id 8 --benchmark   # + 36,000 benchmark images
    """
    import time

    from fsbench import ui

    if benchmark:
        from fsbench.generators.procedural.bench import check_bench_pairs, describe_benchmarks
        from fsbench.generators.procedural.make import check_options

        check_options(n_ids, per_id, size, seed)
        check_bench_pairs(bench_pairs)
        ui.err.print(describe_benchmarks(bench_pairs, Path(out_dir) / "benchmarks"), soft_wrap=True, markup=False,
                     emoji=False, highlight=False)
    t0 = time.perf_counter()
    ds = Procedural().make(None, n_ids, per_id, out_dir, seed, size=size, masks=masks, resume=resume,
                             overwrite=overwrite, benchmark=benchmark, bench_pairs=bench_pairs, workers=workers)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {
        "out": str(out_dir), "identities": ds.num_identities, "images": len(ds), "size": size,
        "masks": masks, "seed": seed, "seconds": round(seconds, 2),
    }
    if benchmark:
        from fsbench.generators.procedural.bench import BENCHMARKS, benchmark_images

        result["benchmarks"] = {name: str(Path(out_dir) / "benchmarks" / name / f"{name}.bin") for name in BENCHMARKS}
        result["benchmark_pairs"] = bench_pairs
        result["benchmark_images"] = len(BENCHMARKS) * benchmark_images(bench_pairs)
    rows = [(k, v if not isinstance(v, dict) else ", ".join(v)) for k, v in result.items()]
    ui.emit(result, as_json=as_json, table=ui.table("procedural dataset", ("field", "value"), rows))


@fsbench.hookimpl
def fsbench_register_generators():
    return [Procedural]


@fsbench.hookimpl
def fsbench_register_commands(commands):
    commands.add(make_procedural_cmd, under="data make")

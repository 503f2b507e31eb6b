"""SegTex (segmentation maps turned into textured faces), written to be read beside the paper
(../shared/papers/segtex.txt); no official code exists.

`segmap_net` (stage segmap: three encoders, AdaIN fusion, 19-class decoder; Sec. III.A),
`texture_net` (stage texture: six encoders, gated fusion, mouth transform, blending, SPADE
generator, multiscale discriminator; Sec. III.B), `losses` (Eq. 2-10), `sizes` (paper and
tiny), `config` (Table 3 and the choices the paper leaves open), `data` (images with their
maps and region crops), `stages` (the two step functions), `steps` (Sec. III.C's seven
dataset steps on fsbench's pipeline-step hook) and `sampler`.

    fsbench data make procedural --out world --ids 200 --per-id 10 --size 64
    fsbench train segtex --data world --run runs/stx --preset tiny           # segmap, then texture
    fsbench sample segtex --run runs/stx --out syn --ids 100 --per-id 20 -o pose_max_yaw=20
    torchrun --nproc_per_node=4 -m fsbench train segtex --data celebamask --run-dir runs/p --preset paper \\
        -o vgg_path=/models/vgg19-dcbb9e9d.pth

Training data needs masks/ and regions/ beside the images (see `data`). The module is cheap to
import: torch is loaded when a stage is planned or a run sampled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsbench
from fsbench.api import Generator, Stage
from fsbench.generators.segtex.config import PRESETS, SegTexConfig, SegTexOptions

EMBEDDED = Path(__file__).parent / "embedded"


class SegTex(Generator):
    """Stage segmap: AdaIN map generator (Eq. 1-5); stage texture: texture infusion network (Eq. 6-10)."""

    name = "segtex"
    description = "SegTex: AdaIN segmentation-map generator + SPADE texture infusion, seven-step dataset pipeline"
    Config = SegTexConfig
    SampleOptions = SegTexOptions
    presets = PRESETS
    stages = (
        Stage("segmap", description="skin, hair, mouth crops -> 19-class map; L1 + perceptual + BCE (Eq. 5)"),
        Stage("texture", needs=("segmap",),
              description="map + five crops -> image through SPADE; style, seg, perceptual, L1, LSGAN + FM (Eq. 10)"),
    )

    def plan_stage(self, stage: str, ctx: Any) -> Any:
        from fsbench.generators.segtex.stages import plan_segmap, plan_texture

        return plan_segmap(ctx) if stage == "segmap" else plan_texture(ctx)

    def default_run(self) -> Path | None:
        """The tiny run trained on the embedded world, with a small texture pool, shipped in the
        package (see its recipe.json)."""
        return EMBEDDED if (EMBEDDED / "run.json").exists() else None

    def sampler(self, run: Any, config: Any, options: Any) -> Any:
        from fsbench.generators.segtex.sampler import SegTexSampler

        return SegTexSampler(run, config, options)


@fsbench.hookimpl
def fsbench_register_generators():
    return [SegTex]


@fsbench.hookimpl
def fsbench_register_pipeline_steps():
    from fsbench.generators.segtex.steps import STEPS

    return list(STEPS)


@fsbench.hookimpl
def fsbench_register_commands(commands):
    from fsbench.generators.segtex.edit import edit_cmd

    commands.group("segtex", "SegTex's own tools: attribute editing (Figure 6a).")
    commands.add(edit_cmd, under="segtex")

"""VIGFace (Kim et al.): virtual identities from an FR model with virtual prototypes, then an
embedding-conditioned diffusion model. No official code exists; this is written to be read
beside the paper (../shared/papers/vigface.txt): `stages` (Sec. 4.1-4.2, Eq. 3-9),
`uvit` (the network), `diffusion` (schedule, DDIM, guidance), `sampler` (Table 1's virtual
and real identities), `config` (Sec. 5.1's recipe and the choices the paper leaves open).

    fsbench train vigface --data world --run runs/vig --preset tiny     # stage fr, then diffusion
    fsbench sample vigface --run runs/vig --out syn --ids 100 --per-id 10 -o guidance=2.5
    fsbench evaluate --generator vigface --metrics sep,cst              # the embedded default run

The module is cheap to import: torch is loaded when a stage is planned or a run sampled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsbench
from fsbench.api import Generator, Stage
from fsbench.generators.vigface.config import PRESETS, VIGFaceConfig, VIGFaceOptions

EMBEDDED = Path(__file__).parent / "embedded"


class VIGFace(Generator):
    """Stage fr: ArcFace with virtual prototypes; stage diffusion: U-ViT + AdaLN, x0-prediction."""

    name = "vigface"
    description = "VIGFace: virtual prototypes (Eq. 3-7) + embedding-conditioned U-ViT diffusion (Eq. 8-9)"
    Config = VIGFaceConfig
    SampleOptions = VIGFaceOptions
    presets = PRESETS
    stages = (
        Stage("fr", description="IResNet + ArcFace over n real and k virtual prototypes (Sec. 4.1)"),
        Stage("diffusion", needs=("fr",), description="U-ViT with AdaLN on the frozen f_FR(x0), Eq. 8 (Sec. 4.2)"),
    )

    def plan_stage(self, stage: str, ctx: Any) -> Any:
        from fsbench.generators.vigface.stages import plan_diffusion, plan_fr

        return plan_fr(ctx) if stage == "fr" else plan_diffusion(ctx)

    def sampler(self, run: Any, config: Any, options: Any) -> Any:
        from fsbench.generators.vigface.sampler import VIGFaceSampler

        return VIGFaceSampler(run, config, options)

    def default_run(self) -> Path | None:
        """The tiny run trained on the embedded world, shipped in the package (see its RECIPE.md)."""
        return EMBEDDED if (EMBEDDED / "run.json").exists() else None


@fsbench.hookimpl
def fsbench_register_generators():
    return [VIGFace]

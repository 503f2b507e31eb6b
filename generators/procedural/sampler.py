"""The procedural world behind the core's sampling contract: a key is a world identity and
an image index; the image, its class map and its region crops are `render_job`'s, so a
dataset sampled through `fsbench sample procedural` holds the bytes `fsbench data make
procedural` writes for the same seed (tests/test_procedural.py checks it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from fsbench.api import Identity, Sample, SampleKey, Sampler
from fsbench.errors import UsageError
from fsbench.generators.procedural.items import AUX_DIRS, Job, identity_name, render_job
from fsbench.generators.procedural.params import HELD_OUT_BASE, Strengths


class ProceduralSampler(Sampler):
    suffix = ".jpg"
    aux_dirs = AUX_DIRS
    batch_size = 32

    def __init__(self, config: Any, strengths: Strengths) -> None:
        self.config, self.strengths = config, strengths
        self.info = {"strengths": asdict(strengths)}
        if not config.masks:
            self.aux_dirs = ()

    def identities(self, n_ids: int, seed: int) -> list[Identity]:
        first = self.config.first_id
        if first + n_ids > HELD_OUT_BASE:
            raise UsageError(f"--ids {n_ids} from first_id {first}: training identities end at {HELD_OUT_BASE:,} "
                             "(those after are held out for benchmarks)")
        return [Identity(identity_name(i), i, {"is_virtual": False}) for i in range(first, first + n_ids)]

    def sample(self, keys: Sequence[SampleKey]) -> list[Sample]:
        c = self.config
        out = []
        for k in keys:
            _, _, jpeg, aux, row = render_job(Job(k.seed, k.row, k.image, c.size, c.masks, c.region_size,
                                                  strengths=self.strengths))
            out.append(Sample(jpeg, row, aux))
        return out

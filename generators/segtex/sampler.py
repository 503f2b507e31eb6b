"""Sampling SegTex: world-free identities through the seven-step pipeline (steps.py).

Identity row r is a function of (seed, r) alone: its skin and eye crops come from the texture
pool's item ``default_rng([seed, N]).permutation(N)[r mod N]`` (the run's training data by default, or
``-o textures=DIR``), recorded as the manifest's ``skin_source``. Image j of identity r then
goes through the pipeline's steps in order; each step draws from its own generator
``default_rng([seed, r, j, slot_index])`` (the maps step from ``[seed, r, j mod
maps_per_identity, 0]``: ten maps per identity), so an image's draws never depend on its
batch, its shard, or on the draws of another step (replacing the pose step leaves augment's
draws as they were). Its floats can: a batched convolution sums in another order, moving a
value by 1 of 255 now and then (2 of 196,608 at batch 32 vs 1, reports/benchmarks/segtex.md);
fsbench.sampling's fixed chunks are why sharded and unsharded runs still write the same bytes.

Every image's manifest row records each slot: the step that filled it (``pose:
segtex.pose``) or ``not installed``, and the step's parameters as ``<slot>_<key>`` columns
(``pose_yaw``, ``augment_blur_sigma``...). dataset.json's ``sampler.pipeline`` is
`fsbench.pipeline.Pipeline.record()`: which plugin filled which slot. The final map (posed
as the image) is written beside each image as ``masks/<identity>/<image>.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from fsbench.api import Identity, Sample, SampleKey, Sampler
from fsbench.data import FaceDataset
from fsbench.errors import UsageError
from fsbench.generators.segtex.data import SegTexData
from fsbench.generators.segtex.stages import build_segmap, build_texture
from fsbench.generators.segtex.steps import PIPELINE, SLOTS, SegTexContext, class_colours
from fsbench.pipeline import resolve
from fsbench.train.device import pick_device
from fsbench.ui import warn


@lru_cache(maxsize=8)
def pool_order(seed: int, n: int) -> np.ndarray:
    """The seeded walk of a pool of n faces that identity rows follow (computed once a seed)."""
    return np.random.default_rng([seed, n]).permutation(n)


class SegTexSampler(Sampler):
    suffix = ".png"
    aux_dirs = ("masks",)

    def __init__(self, run: Any, config: Any, options: Any) -> None:
        if options.age_min > options.age_max:
            raise UsageError(f"-o age_min={options.age_min} is above -o age_max={options.age_max}")
        segmap, texture = run.load("segmap"), run.load("texture")
        self.config, self.options = config, options
        self.device = pick_device(options.device)
        g, _ = build_segmap(config)
        g.load_state_dict(segmap["modules"]["generator"])
        with torch.random.fork_rng(devices=[]):  # painter=untrained: the network at a seeded start
            torch.manual_seed(config.seed)
            t, _ = build_texture(config)
        if options.painter == "network":
            t.load_state_dict(texture["ema" if options.weights == "ema" else "modules"]["texture"])
        # -o textures=DIR, else a texture pool shipped inside the run (the embedded default), else
        # the data the run was trained on
        shipped = run.root / "textures"
        source = options.textures or (str(shipped) if shipped.is_dir() else run.info["data"])
        pool = FaceDataset.open(source)
        pool_data = SegTexData(pool, config.image_size)
        colours = None
        if options.painter == "mean_colour":
            every = pool_data.read(range(len(pool)))
            colours = class_colours(every.maps, every.images)
        self.context = SegTexContext(
            segmap=g.to(self.device).eval(), texture=t.to(self.device).eval(), device=self.device,
            pool_regions=pool_data.all_crops(), pool_paths=[it.path for it in pool.items],
            options=options, weights=options.weights, size=config.image_size, class_colours=colours)
        self.pipeline = resolve(PIPELINE, SLOTS)
        self.pipeline.options = {s.name: options for s in self.pipeline.slots}  # every step reads SegTexOptions
        self.steps = self.pipeline.steps()
        added = [s.name for s in self.pipeline.slots if s.name not in SLOTS]
        # a built-in slot keeps its generator whatever other plugins add
        self.slot_index = {**{s: k for k, s in enumerate(SLOTS)}, **{s: len(SLOTS) + k for k, s in enumerate(added)}}
        self.record = self.pipeline.record()
        self.batch_size = options.batch_size
        self.info = {"pipeline": self.record, "weights": options.weights, "painter": options.painter, "device": str(self.device),
                     "image_size": config.image_size, "maps_per_identity": options.maps_per_identity,
                     "feature_net": texture["extra"].get("feature_net"), "textures": str(source),
                     "textures_fingerprint": pool.fingerprint(), "textures_items": len(pool)}

    def source(self, seed: int, row: int) -> int:
        """The pool item that gives identity `row` its skin and eyes.

        Rows walk one seeded permutation of the pool, so the first N identities never share a
        skin (independent draws would: 50 from a pool of 100 repeat about 12 pairs, and two
        identities with one face make impostor pairs that are genuine); row r >= N reuses the
        item of row r mod N, which identities() warns about."""
        n = len(self.context.pool_paths)
        return int(pool_order(seed, n)[row % n])

    def identities(self, n_ids: int, seed: int) -> list[Identity]:
        if n_ids > len(self.context.pool_paths):
            warn(f"--ids {n_ids} is more than the texture pool's {len(self.context.pool_paths)} faces: identities "
                 f"beyond them share a skin with an earlier one (-o textures=DIR gives a larger pool)")
        return [Identity(f"segtex_{r:06d}", r, {"skin_source": self.context.pool_paths[self.source(seed, r)]})
                for r in range(n_ids)]

    def _rngs(self, keys: Sequence[SampleKey], slot: str) -> list[np.random.Generator]:
        k = self.slot_index[slot]
        m = self.options.maps_per_identity
        return [np.random.default_rng([key.seed, key.row, key.image % m if slot == "maps" else key.image, k])
                for key in keys]

    def sample(self, keys: Sequence[SampleKey]) -> list[Sample]:
        s = self.config.image_size
        src = [self.source(k.seed, k.row) for k in keys]
        batch = {"images": np.zeros((len(keys), s, s, 3), np.uint8), "maps": None, "keys": list(keys),
                 "params": [{} for _ in keys], "regions": self.context.crops(src),  # (B, 5, S, S, 3)
                 "segtex": self.context}
        with torch.no_grad():
            for step in self.steps:
                batch = self.pipeline.run(batch, self._rngs(keys, step.slot), steps=[step])
        out = []
        for i, key in enumerate(keys):
            meta: dict[str, Any] = {}
            for slot, rec in self.record.items():
                meta[slot] = rec["step"] if rec["status"] == "ran" else "not installed"
                for name, value in batch["params"][i].get(slot, {}).items():
                    meta[f"{slot}_{name}"] = value
            aux = {} if batch["maps"] is None else {"masks": (f"{key.image:04d}.png", batch["maps"][i])}
            out.append(Sample(np.ascontiguousarray(batch["images"][i]), meta, aux))
        return out

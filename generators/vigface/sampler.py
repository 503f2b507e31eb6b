"""Sampling VIGFace: identities are prototype rows of the stage-1 head, images come from DDIM.

Virtual identities are rows n .. n + k - 1 (new people: `-o ids=virtual`, guidance 2.5 by
default), real ones rows 0 .. n - 1 (more images of training identities: `-o ids=real`,
guidance 0.5; the shipped tiny run recommends 1.5, which its run.json sets), as Table 1
uses them. The condition is the unit prototype; x_T is drawn from
the key alone (seed, row, image index), so an image's noise never depends on its batch or
shard (its floats may move by rounding with another -o batch_size; sampling's fixed chunks keep
shards byte-identical).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fsbench.api import Identity, Sample, SampleKey, Sampler
from fsbench.errors import UsageError
from fsbench.generators.vigface.diffusion import CosineSchedule, ddim_sample
from fsbench.generators.vigface.stages import build_uvit
from fsbench.train.device import pick_device


class VIGFaceSampler(Sampler):
    suffix = ".png"

    def __init__(self, run: Any, config: Any, options: Any) -> None:
        fr, diffusion = run.load("fr"), run.load("diffusion")
        self.config, self.options = config, options
        self.device = pick_device(options.device)
        weight = fr["modules"]["head"]["weight"].float()
        self.prototypes = F.normalize(weight, dim=1)  # (n + k, D)
        self.identity_names = list(fr["extra"]["identities"])
        self.n_real = int(fr["extra"]["num_real"])
        self.k = len(self.prototypes) - self.n_real
        self.model = build_uvit(config)
        self.model.load_state_dict(diffusion["ema" if options.weights == "ema" else "modules"]["uvit"])
        self.model.to(self.device).eval()
        self.schedule = CosineSchedule(config.diffusion_steps)
        by_kind = options.guidance_virtual if options.ids == "virtual" else options.guidance_real
        self.guidance = by_kind if options.guidance is None else options.guidance
        if options.steps > config.diffusion_steps:
            raise UsageError(f"-o steps={options.steps}: at most the schedule's T={config.diffusion_steps}")
        self.batch_size = options.batch_size
        self.info = {"ids": options.ids, "guidance": self.guidance, "steps": options.steps,
                     "weights": options.weights, "device": str(self.device), "image_size": config.image_size}

    def identities(self, n_ids: int, seed: int) -> list[Identity]:
        meta = {"guidance": self.guidance, "steps": self.options.steps}
        if self.options.ids == "virtual":
            if n_ids > self.k:
                raise UsageError(f"--ids {n_ids}: this run has {self.k} virtual prototypes (train with "
                                 f"-o virtual_ids=N for more)")
            return [Identity(f"v_{j:06d}", self.n_real + j, {"is_virtual": True, "prototype_row": self.n_real + j,
                                                             **meta}) for j in range(n_ids)]
        if n_ids > self.n_real:
            raise UsageError(f"--ids {n_ids}: this run knows {self.n_real} real identities")
        return [Identity(f"r_{name}", r, {"is_virtual": False, "prototype_row": r, "source_identity": name, **meta})
                for r, name in enumerate(self.identity_names[:n_ids])]

    def sample(self, keys: Sequence[SampleKey]) -> list[Sample]:
        c, s = 3, self.config.image_size
        noise = np.stack([np.random.default_rng([k.seed, k.row, k.image]).standard_normal((c, s, s)) for k in keys])
        x_t = torch.from_numpy(noise.astype(np.float32)).to(self.device)
        cond = self.prototypes[[k.row for k in keys]].to(self.device)
        autocast = None
        if self.device.type == "cuda":
            def autocast():
                return torch.autocast("cuda", dtype=torch.bfloat16)
        x0 = ddim_sample(self.model, self.schedule, x_t, cond, self.guidance, self.options.steps, autocast)
        images = ((x0.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Sample(np.ascontiguousarray(img)) for img in images]

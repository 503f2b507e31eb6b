"""The seven steps of SegTex's dataset pipeline (Sec. III.C, Fig. 4), one PipelineStep each.

Pipeline ``segtex``, slots in order (`SLOTS`); any plugin may replace a step (``replaces =
True``) or add one after a slot (``after = "pose"``), see fsbench.api.PipelineStep:

1. ``maps``: the identity's skin crop is fixed; hair and mouth crops are drawn from the texture
   pool and the trained segmap generator makes the map. The sampler hands this slot a
   generator keyed by the map variant (image index mod maps_per_identity), so each identity
   has that many distinct maps (the paper: ten) and its other images repeat them. The paper
   says the maps differ in "hair and mouth features" while the skin stays; it does not say
   whose textures paint them. We read it as: the drawn crops shape the map, the identity's
   own crops paint it (``-o map_textures=identity``: a new hairstyle, the same hair colour),
   because painting with the drawn crops too changes the person: on the first embedded
   default (5-epoch segmap stage), 50 identities x 10, the default judge verified 81.8 % of
   pairs this way and 66.5 % with ``-o map_textures=drawn`` (86.3 % with one map per identity).
2. ``texture_randomisation``: each of the five crops gets a colour gain drawn in 1 +- jitter.
3. ``texture_application``: the texture network paints the map with the crops.
4. ``pose``: a 2.5-D warp with no external model (the paper uses facevid2vid): the face is a
   shallow ellipsoid z = depth * sqrt(1 - u^2 - v^2) over the image's normalised (u, v), and a
   yaw and a pitch shift each output pixel's source by z * sin(angle), so the face's centre
   moves and its border stays; the image is resampled bilinearly, the map nearest.
5. ``refiner`` (the paper's StyleGAN inverter at truncation 0.6) and 6. ``age`` (SAM, ages
   10-80): no offline weights exist, so these are plug-in points (``available = False``);
   the manifest and dataset.json record them "not installed". A model plugin fills them by
   registering a step for ("segtex", "refiner") / ("segtex", "age") with ``replaces = True``;
   it gets SegTexOptions as its options (refiner_truncation, age_min, age_max).
7. ``augment``: brightness, contrast, colour balance, Gaussian blur, parameters drawn.

Every step receives fsbench's batch ``{"images" (B, S, S, 3) uint8, "maps" (B, S, S) uint8,
"keys", "params"}`` plus SegTex's ``"regions"`` (B, 5, S, S, 3) uint8 crops (skin, hair,
l_eye, r_eye, mouth) and ``"segtex"`` (`SegTexContext`: the networks, the device, the
texture pool, the options); it draws only from ``rngs[i]`` and writes what it drew into
``params[i][slot]`` as scalars (the manifest's ``<slot>_<key>`` columns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsbench.api import PipelineStep

__all__ = ["PAINTED_FROM", "SLOTS", "STEPS", "Age", "Augment", "Maps", "Pose", "Refiner", "SegTexContext",
           "TextureApplication", "TextureRandomisation", "class_colours", "gaussian_kernel", "mean_colour_paint",
           "pose_grid"]

PIPELINE = "segtex"
SLOTS = ("maps", "texture_randomisation", "texture_application", "pose", "refiner", "age", "augment")


@dataclass
class SegTexContext:
    """What SegTex's steps share within one batch (batch["segtex"])."""

    segmap: Any  # SegmapGenerator, eval mode, on `device`
    texture: Any  # TextureNet (EMA or last weights), eval mode, on `device`
    device: Any  # torch.device
    pool_regions: np.ndarray  # (N, 5, R, R, 3) uint8: the crops textures are drawn from, at their own size
    pool_paths: list[str]  # the pool's items, for the manifest
    options: Any  # SegTexOptions
    weights: str  # "ema" or "last"
    size: int  # S, the networks' side
    class_colours: np.ndarray | None = None  # (19, 3) float: the pool's mean colour per class (painter mean_colour)

    def crops(self, items: Sequence[int], regions: Sequence[int] | slice = slice(None)) -> np.ndarray:
        """Pool items' crops resized to S: (len(items), len(regions), S, S, 3) uint8."""
        from fsbench.train.data import resize_uint8

        picked = self.pool_regions[list(items)][:, regions]  # (n, k, R, R, 3)
        n, k = picked.shape[:2]
        return resize_uint8(picked.reshape(n * k, *picked.shape[2:]), self.size).reshape(n, k, self.size, self.size, 3)


def _ctx(batch: dict[str, Any]) -> SegTexContext:
    return batch["segtex"]


def _to_float(images: np.ndarray, device: Any) -> Any:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float in [-1, 1] on `device`."""
    import torch

    from fsbench.train.data import normalize

    return normalize(torch.from_numpy(np.ascontiguousarray(images)).to(device))


def _to_uint8(x: Any) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


class Maps(PipelineStep):
    name = "segtex.maps"
    description = "step 1: hair and mouth crops drawn, the identity's skin kept; the segmap generator makes the map"
    pipeline, slot = PIPELINE, "maps"

    def apply(self, batch: dict[str, Any], rngs: Sequence[np.random.Generator]) -> dict[str, Any]:
        import torch

        c = _ctx(batch)
        shapes = batch["regions"].copy()  # (B, 5, S, S, 3): the crops the map is made from
        n = len(c.pool_regions)
        for i, rng in enumerate(rngs):
            hair, mouth = (int(v) for v in rng.integers(0, n, 2))
            shapes[i, 1], shapes[i, 4] = c.crops([hair], [1])[0, 0], c.crops([mouth], [4])[0, 0]
            batch["params"][i][self.slot] = {"variant": batch["keys"][i].image % c.options.maps_per_identity,
                                             "hair_source": c.pool_paths[hair], "mouth_source": c.pool_paths[mouth]}
        if c.options.map_textures == "drawn":
            batch["regions"] = shapes
        with torch.no_grad():
            skin, hair_x, mouth_x = (_to_float(shapes[:, k], c.device) for k in (0, 1, 4))
            logits = c.segmap(skin, hair_x, mouth_x)  # (B, 19, S, S)
        batch["maps"] = logits.argmax(1).byte().cpu().numpy()
        return batch


class TextureRandomisation(PipelineStep):
    name = "segtex.texture_randomisation"
    description = "step 2: each region crop's colour gain drawn in 1 +- texture_jitter"
    pipeline, slot = PIPELINE, "texture_randomisation"

    def apply(self, batch: dict[str, Any], rngs: Sequence[np.random.Generator]) -> dict[str, Any]:
        from fsbench.generators.segtex.data import REGIONS

        jitter = _ctx(batch).options.texture_jitter
        regions = batch["regions"]
        for i, rng in enumerate(rngs):
            gains = rng.uniform(1 - jitter, 1 + jitter, len(REGIONS))
            regions[i] = np.clip(regions[i] * gains[:, None, None, None], 0, 255).round().astype(np.uint8)
            batch["params"][i][self.slot] = {f"{r}_gain": float(g) for r, g in zip(REGIONS, gains)}
        return batch


class TextureApplication(PipelineStep):
    name = "segtex.texture_application"
    description = "step 3: the texture infusion network paints the map with the five crops"
    pipeline, slot = PIPELINE, "texture_application"

    def apply(self, batch: dict[str, Any], rngs: Sequence[np.random.Generator]) -> dict[str, Any]:
        import torch

        from fsbench.generators.segtex.stages import onehot

        c = _ctx(batch)
        if c.options.painter == "mean_colour":
            batch["images"] = mean_colour_paint(batch["maps"], batch["regions"], c.class_colours)
        else:
            with torch.no_grad():
                seg = onehot(torch.from_numpy(batch["maps"]).to(c.device))
                parts = [_to_float(batch["regions"][:, k], c.device) for k in range(batch["regions"].shape[1])]
                batch["images"] = _to_uint8(c.texture(seg, *parts))
        for p in batch["params"]:
            p[self.slot] = {"weights": c.weights, "painter": c.options.painter}
        return batch


# map classes the mean-colour baseline paints from each region crop (REGIONS order) (CelebAMask-HQ indices:
# generators.procedural.render.CLASSES); the skin crop stands for every skin-coloured part
PAINTED_FROM = {0: (1, 2, 6, 7, 8, 9, 17), 1: (13, 14), 2: (4,), 3: (5,), 4: (10, 11, 12)}


def class_colours(maps: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(N, S, S) maps, (N, S, S, 3) images -> (CLASSES, 3): each class's mean colour over a pool
    (mid grey for a class the pool never shows): what the baseline paints outside the regions."""
    from fsbench.generators.segtex.data import CLASSES

    colours = np.full((CLASSES, 3), 127.5)
    for k in range(CLASSES):
        hit = maps == k
        if hit.any():
            colours[k] = images[hit].mean(0)
    return colours


def mean_colour_paint(maps: np.ndarray, regions: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """The per-region mean-colour baseline: every class of the map in one flat colour, the mean of
    its region crop's non-black pixels (crops are black outside their region), else the pool's
    mean colour of that class. (B, S, S), (B, 5, S, S, 3) -> (B, S, S, 3) uint8."""
    out = colours[maps.astype(np.int64)]  # (B, S, S, 3)
    for k, classes in PAINTED_FROM.items():
        crop = regions[:, k].reshape(len(regions), -1, 3).astype(np.float64)  # (B, S*S, 3)
        inside = crop.max(-1) > 8  # JPEG leaves near-black noise outside the region
        n = inside.sum(1)
        mean = (crop * inside[..., None]).sum(1) / np.maximum(n, 1)[:, None]  # (B, 3)
        for b in np.flatnonzero(n):
            hit = np.isin(maps[b], classes)
            out[b][hit] = mean[b]
    return np.clip(out, 0, 255).round().astype(np.uint8)


def pose_grid(yaw: np.ndarray, pitch: np.ndarray, size: int, depth: float) -> np.ndarray:
    """(B,) yaw and pitch in radians -> (B, S, S, 2) grid_sample sources (x, y) in [-1, 1].

    Output pixel (u, v) reads (u - z sin(yaw), v - z sin(pitch)), z = depth sqrt(max(0, 1 - u^2 - v^2))."""
    t = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres (align_corners=False)
    v, u = np.meshgrid(t, t, indexing="ij")  # (S, S): v down, u right
    z = depth * np.sqrt(np.clip(1 - u**2 - v**2, 0, None))
    x_src = u[None] - z[None] * np.sin(yaw)[:, None, None]
    y_src = v[None] - z[None] * np.sin(pitch)[:, None, None]
    return np.stack([x_src, y_src], axis=-1).astype(np.float32)


class Pose(PipelineStep):
    name = "segtex.pose"
    description = "step 4: a 2.5-D yaw/pitch warp of image and map over a shallow face ellipsoid"
    pipeline, slot = PIPELINE, "pose"

    def apply(self, batch: dict[str, Any], rngs: Sequence[np.random.Generator]) -> dict[str, Any]:
        import torch
        from torch.nn import functional as F

        c = _ctx(batch)
        o = c.options
        draws = np.array([[r.uniform(-o.pose_max_yaw, o.pose_max_yaw), r.uniform(-o.pose_max_pitch, o.pose_max_pitch)]
                          for r in rngs])  # (B, 2) degrees
        size = batch["images"].shape[1]
        grid = torch.from_numpy(pose_grid(np.radians(draws[:, 0]), np.radians(draws[:, 1]), size, o.pose_depth))
        images = torch.from_numpy(np.ascontiguousarray(batch["images"])).permute(0, 3, 1, 2).float()
        warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        batch["images"] = warped.round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous().numpy()
        if batch.get("maps") is not None:
            maps = torch.from_numpy(np.ascontiguousarray(batch["maps"]))[:, None].float()
            batch["maps"] = F.grid_sample(maps, grid, mode="nearest", padding_mode="border",
                                          align_corners=False)[:, 0].byte().numpy()
        for p, (yaw, pitch) in zip(batch["params"], draws):
            p[self.slot] = {"yaw": float(yaw), "pitch": float(pitch)}
        return batch


class Refiner(PipelineStep):
    name = "segtex.refiner"
    description = "step 5: StyleGAN inversion at truncation 0.6 (a plug-in point: no offline weights)"
    pipeline, slot = PIPELINE, "refiner"
    available = False

    def apply(self, batch: dict[str, Any], rngs: Sequence[np.random.Generator]) -> dict[str, Any]:
        raise NotImplementedError("no StyleGAN inverter is installed; a plugin replaces ('segtex', 'refiner')")


class Age(PipelineStep):
    name = "segtex.age"
    description = "step 6: age transfer to an age drawn in 10-80 (a plug-in point: no offline weights)"
    pipeline, slot = PIPELINE, "age"
    available = False

    def apply(self, batch: dict[str, Any], rngs: Sequence[np.random.Generator]) -> dict[str, Any]:
        raise NotImplementedError("no age-transfer model is installed; a plugin replaces ('segtex', 'age')")


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian of radius ceil(3 sigma) (OpenCV's GaussianBlur with ksize from sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """(S, S, 3) float, separable Gaussian with reflected borders."""
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    padded = np.pad(image, ((r, r), (r, r), (0, 0)), mode="reflect")
    rows = sum(w * padded[:, j:j + image.shape[1]] for j, w in enumerate(k))
    return sum(w * rows[j:j + image.shape[0]] for j, w in enumerate(k))


class Augment(PipelineStep):
    name = "segtex.augment"
    description = "step 7: brightness, contrast, colour balance and Gaussian blur, parameters drawn"
    pipeline, slot = PIPELINE, "augment"

    def apply(self, batch: dict[str, Any], rngs: Sequence[np.random.Generator]) -> dict[str, Any]:
        o = _ctx(batch).options
        images = batch["images"]
        for i, rng in enumerate(rngs):
            brightness = rng.uniform(-o.augment_brightness, o.augment_brightness)
            contrast = rng.uniform(1 - o.augment_contrast, 1 + o.augment_contrast)
            balance = rng.uniform(1 - o.augment_balance, 1 + o.augment_balance, 3)
            sigma = rng.uniform(0, o.augment_blur)
            x = images[i].astype(np.float64)
            x = (x - x.mean()) * contrast + x.mean() + brightness * 255  # contrast about the image's mean
            x = x * balance  # colour balance: a gain per channel
            if sigma >= 0.3:  # below, the kernel is a single tap
                x = _blur(x, sigma)
            images[i] = np.clip(x, 0, 255).round().astype(np.uint8)
            batch["params"][i][self.slot] = {"brightness": float(brightness), "contrast": float(contrast),
                                             "balance_r": float(balance[0]), "balance_g": float(balance[1]),
                                             "balance_b": float(balance[2]), "blur_sigma": float(sigma)}
        return batch


STEPS = (Maps, TextureRandomisation, TextureApplication, Pose, Refiner, Age, Augment)

"""One dataset item, from its key alone: image bytes, mask bytes, region crops and manifest row.

This is what worker processes run. Its output depends only on the arguments, so any subset
of a dataset can be regenerated or sharded, and two runs are byte-identical.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from generators.procedural.params import (
    DEFAULT_STRENGTHS,
    Identity,
    Strengths,
    draw_identity,
    draw_nuisance,
)
from generators.procedural.render import CLASSES, EYE_G, HAIR, L_EYE, L_LIP, MOUTH, R_EYE, SKIN, U_LIP, render

# The five region crops SegTex consumes, side by side in one JPEG strip, in this order:
# regions/<identity>/<stem>.jpg is (REGION_SIZE, 5 * REGION_SIZE, 3), crop k at columns
# [k * REGION_SIZE, (k + 1) * REGION_SIZE); pixels outside the region are black.
REGIONS = ("skin", "hair", "l_eye", "r_eye", "mouth")
_REGION_CLASSES = ((SKIN,), (HAIR,), (L_EYE,), (R_EYE,), (MOUTH, U_LIP, L_LIP))
REGION_SIZE = 64


def identity_name(index: int) -> str:
    return f"id_{index:08d}"


def image_name(index: int) -> str:
    return f"{index:04d}.jpg"


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for one item."""

    seed: int
    identity: int
    image: int
    size: int = 112
    masks: bool = True
    region_size: int = REGION_SIZE
    protocol: str = "train"
    frontal: bool = False
    profile: bool = False
    age_offset: float = 0.0
    strengths: Strengths = DEFAULT_STRENGTHS


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _jpeg(arr: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def region_strip(image: np.ndarray, labels: np.ndarray, size: int = REGION_SIZE) -> np.ndarray:
    """(size, 5 * size, 3) uint8: each region's bounding square (nearest-neighbour resampled),
    pixels outside the region zeroed.

    A region absent from the image (an eye hidden in profile, a bald head) is all zeros.
    """
    strip = np.zeros((size, size * len(REGIONS), 3), np.uint8)
    steps = (np.arange(size) + 0.5) / size
    h, w = labels.shape
    for k, classes in enumerate(_REGION_CLASSES):
        m = (labels == classes[0]) if len(classes) == 1 else (labels >= min(classes)) & (labels <= max(classes))
        rows = np.flatnonzero(m.any(1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(m.any(0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        side = min(max(r1 - r0, c1 - c0) + 2, h, w)
        r0 = max(min((r0 + r1 - side) // 2, h - side), 0)
        c0 = max(min((c0 + c1 - side) // 2, w - side), 0)
        # nearest-neighbour resampling by index: a tenth of the cost of PIL's resize here
        ri = (r0 + steps * side).astype(np.intp)[:, None]
        ci = (c0 + steps * side).astype(np.intp)[None, :]
        strip[:, k * size:(k + 1) * size] = image[ri, ci] * m[ri, ci][..., None]
    return strip


_IDENTITY_CACHE: dict[tuple[int, int], Identity] = {}


def _identity(seed: int, index: int) -> Identity:
    key = (seed, index)
    ident = _IDENTITY_CACHE.get(key)
    if ident is None:
        if len(_IDENTITY_CACHE) > 4096:
            _IDENTITY_CACHE.clear()
        ident = _IDENTITY_CACHE[key] = draw_identity(seed, index)
    return ident


def render_arrays(job: Job) -> tuple[np.ndarray, np.ndarray, dict]:
    """(uint8 RGB image, uint8 class map, manifest row) of one job, before encoding."""
    ident = _identity(job.seed, job.identity)
    nz = draw_nuisance(job.seed, job.identity, job.image, job.protocol, job.strengths,
                       frontal=job.frontal, profile=job.profile, age_offset=job.age_offset)
    image, labels = render(ident, nz, job.size)
    row = {
        "id_index": job.identity, "img_index": job.image, "seed": job.seed,
        "is_virtual": False, "source": "procedural", "protocol": job.protocol,
        **nz.manifest(),
        "age_years": round(ident.base_age + nz.age_delta, 2),
        "hair_style": ident.hair_style, "has_glasses": int(EYE_G in labels),
    }
    return image, labels, row


def render_job(job: Job) -> tuple[str, str, bytes, dict[str, tuple[str, bytes]], dict]:
    """(identity, file name, JPEG bytes, aux files, manifest row): what the writer stores."""
    image, labels, row = render_arrays(job)
    name = image_name(job.image)
    jpeg = _jpeg(image, row["jpeg_quality"])
    aux: dict[str, tuple[str, bytes]] = {}
    if job.masks:
        stem = name.rsplit(".", 1)[0]
        aux["masks"] = (stem + ".png", _png(labels))
        # textures, so JPEG (quality 95): 8x cheaper to encode than PNG at this size
        aux["regions"] = (stem + ".jpg", _jpeg(region_strip(image, labels, job.region_size), 95))
    return identity_name(job.identity), name, jpeg, aux, row


def render_chunk(jobs: list[Job]) -> list[tuple[str, str, bytes, dict[str, tuple[str, bytes]], dict]]:
    return [render_job(j) for j in jobs]


__all__ = ["CLASSES", "REGIONS", "Job", "identity_name", "image_name", "region_strip", "render_arrays", "render_job"]

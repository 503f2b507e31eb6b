"""One dataset item, from its key alone: image bytes, mask bytes, region crops and manifest row.

This is what worker processes run. Its output depends only on the arguments, so any subset
of a dataset can be regenerated or sharded, and two runs are byte-identical.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from fsbench.data.images import encode_image
from generators.procedural.params import (
    DEFAULT_STRENGTHS,
    Identity,
    Strengths,
    draw_identity,
    draw_nuisance,
)
from generators.procedural.render import CLASSES, EYE_G, HAIR, L_EYE, L_LIP, MOUTH, R_EYE, SKIN, U_LIP, render
from generators.procedural.render import warm_caches as render_warm_caches

# The five region crops SegTex consumes, side by side in one JPEG strip, in this order:
# regions/<identity>/<stem>.jpg is (REGION_SIZE, 5 * REGION_SIZE, 3), crop k at columns
# [k * REGION_SIZE, (k + 1) * REGION_SIZE); pixels outside the region are black.
REGIONS = ("skin", "hair", "l_eye", "r_eye", "mouth")
_REGION_CLASSES = ((SKIN,), (HAIR,), (L_EYE,), (R_EYE,), (MOUTH, U_LIP, L_LIP))
_REGION_OF = np.zeros(256, np.intp)  # class index -> region number + 1 (0: in no region)
for _k, _classes in enumerate(_REGION_CLASSES):
    _REGION_OF[list(_classes)] = _k + 1
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


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(arr: np.ndarray) -> bytes:
    """A greyscale 8-bit PNG of a (h, w) uint8 array (no filter, zlib level 1).

    Written by hand: Pillow's PNG plugin spends ten times longer in Python than zlib takes
    to compress a 112x112 mask. Any PNG reader decodes it (Pillow included)."""
    h, w = arr.shape
    rows = np.zeros((h, w + 1), np.uint8)  # each scanline starts with its filter type, 0 = none
    rows[:, 1:] = arr
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + _png_chunk(b"IEND", b""))


def warm_caches(size: int = 112) -> None:
    """Everything a render lazily builds or imports, done now: call it before forking workers."""
    from PIL import Image

    render_warm_caches(size)
    Image.preinit()  # the JPEG plugin


def region_strip(image: np.ndarray, labels: np.ndarray, size: int = REGION_SIZE) -> np.ndarray:
    """(size, 5 * size, 3) uint8: each region's bounding square (nearest-neighbour resampled),
    pixels outside the region zeroed.

    A region absent from the image (an eye hidden in profile, a bald head) is all zeros.
    All five crops come from one gather, and the bounding boxes from two bincounts: a few
    dozen numpy calls in all, whatever the number of regions.
    """
    h, w = labels.shape
    n = len(REGIONS)
    reg = _REGION_OF.take(labels)  # region number + 1 of every pixel, 0 for none
    in_row = np.bincount((reg + np.arange(0, h * (n + 1), n + 1)[:, None]).ravel(), minlength=h * (n + 1))
    in_col = np.bincount((reg + np.arange(0, w * (n + 1), n + 1)[None, :]).ravel(), minlength=w * (n + 1))
    rows = in_row.reshape(h, n + 1)[:, 1:] > 0  # (h, n): row holds region k
    cols = in_col.reshape(w, n + 1)[:, 1:] > 0
    r0, r1 = rows.argmax(0), h - rows[::-1].argmax(0)
    c0, c1 = cols.argmax(0), w - cols[::-1].argmax(0)
    side = np.minimum(np.maximum(r1 - r0, c1 - c0) + 2, min(h, w))
    r0 = np.maximum(np.minimum((r0 + r1 - side) // 2, h - side), 0)
    c0 = np.maximum(np.minimum((c0 + c1 - side) // 2, w - side), 0)
    steps = (np.arange(size) + 0.5) / size
    ri = (r0[:, None] + steps * side[:, None]).astype(np.intp)  # (n, size) source rows of each crop
    ci = (c0[:, None] + steps * side[:, None]).astype(np.intp)
    # flat source pixel of strip pixel (row i, crop k, column j), laid out (size, n * size)
    idx = (ri.T[:, :, None] * w + ci[None, :, :]).reshape(size, n * size)
    # outside its region (an absent region: everywhere) a strip pixel reads a black pixel
    inside = reg.ravel().take(idx) == np.repeat(np.arange(1, n + 1), size)
    np.copyto(idx, h * w, where=~inside)
    src = np.zeros((h * w + 1, 3), np.uint8)
    src[:-1] = image.reshape(-1, 3)
    return src.view("V3").ravel().take(idx).view(np.uint8).reshape(size, n * size, 3)


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
    jpeg = encode_image(image, ".jpg", row["jpeg_quality"])
    aux: dict[str, tuple[str, bytes]] = {}
    if job.masks:
        stem = name.rsplit(".", 1)[0]
        aux["masks"] = (stem + ".png", _png(labels))
        # textures, so JPEG (quality 95): 8x cheaper to encode than PNG at this size
        aux["regions"] = (stem + ".jpg", encode_image(region_strip(image, labels, job.region_size), ".jpg", 95))
    return identity_name(job.identity), name, jpeg, aux, row


def render_chunk(jobs: list[Job]) -> list[tuple[str, str, bytes, dict[str, tuple[str, bytes]], dict]]:
    return [render_job(j) for j in jobs]


__all__ = ["CLASSES", "REGIONS", "Job", "identity_name", "image_name", "region_strip", "render_arrays", "render_job"]

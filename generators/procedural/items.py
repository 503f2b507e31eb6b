"""One dataset item, from its key alone: image bytes, mask bytes, region crops and manifest row.

This is what worker processes run. Its output depends only on the arguments, so any subset
of a dataset can be regenerated or sharded, and two runs are byte-identical.
"""

from __future__ import annotations

import functools
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
# region k's classes as a bit mask: bit c set <=> class c belongs to region k
_REGION_MASKS = np.array([sum(1 << c for c in classes) for classes in _REGION_CLASSES], np.uint32)
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


@functools.lru_cache(maxsize=8)
def _sample_steps(size: int) -> np.ndarray:
    """Where the `size` nearest-neighbour samples fall in a unit square's side."""
    return (np.arange(size) + 0.5) / size


def _region_squares(labels: np.ndarray, size: int) -> np.ndarray:
    """(n, 2, size) source rows [k, 0] and columns [k, 1] of region k's crop: the bounding
    square of its pixels, 2 px larger than the longer side, moved inside the image (an
    absent region gets a centred square, whose crop comes out all black)."""
    h, w = labels.shape
    onehot = np.left_shift(np.uint32(1), labels)  # bit c set: the pixel has class c (no bit for labels >= 32)
    rows = (np.bitwise_or.reduce(onehot, axis=1)[:, None] & _REGION_MASKS) != 0  # (h, n): row holds region k
    cols = (np.bitwise_or.reduce(onehot, axis=0)[:, None] & _REGION_MASKS) != 0
    r0, r1 = rows.argmax(0).tolist(), (h - rows[::-1].argmax(0)).tolist()
    c0, c1 = cols.argmax(0).tolist(), (w - cols[::-1].argmax(0)).tolist()
    starts, sides = [], []
    for top, bottom, left, right in zip(r0, r1, c0, c1):
        side = min(max(bottom - top, right - left) + 2, h, w)
        starts.append((max(min((top + bottom - side) // 2, h - side), 0),
                       max(min((left + right - side) // 2, w - side), 0)))
        sides.append(side)
    return (np.array(starts)[:, :, None] + _sample_steps(size) * np.array(sides)[:, None, None]).astype(np.intp)


def region_strip(image: np.ndarray, labels: np.ndarray, size: int = REGION_SIZE) -> np.ndarray:
    """(size, 5 * size, 3) uint8: each region's bounding square (nearest-neighbour resampled),
    pixels outside the region zeroed.

    A region absent from the image (an eye hidden in profile, a bald head) is all zeros.
    Pixels travel as one uint32 each (R, G, B, class): numpy gathers 4-byte items several
    times faster than 3-byte ones, and the class byte tells which gathered pixels lie
    outside their crop's region.
    """
    h, w = labels.shape
    n = len(REGIONS)
    src = _region_squares(labels, size)
    padded = np.empty(3 * h * w + 1, np.uint8)
    padded[:-1] = image.reshape(-1)
    px = np.ndarray((h * w,), "<u4", padded, 0, (3,)).copy()  # 4 bytes from every 3rd: R, G, B, next R
    px.view(np.uint8)[3::4] = labels.reshape(-1)  # ... and the class instead of the next R
    px = px.reshape(h, w)
    crops = np.empty((n, size, size), "<u4")  # little-endian like px, so byte 3 is the class
    for k in range(n):
        # mode="clip" lets take write straight into crops[k] (the indices are in range anyway)
        px.take(src[k, 0], axis=0).take(src[k, 1], axis=1, out=crops[k], mode="clip")
    crops *= (_REGION_MASKS[:, None, None] >> (crops >> 24)) & 1  # 0 outside crop k's region
    rgbx = crops.view(np.uint8).reshape(n, size, size, 4).transpose(1, 0, 2, 3)  # (size, n, size, 4)
    strip = np.empty((size, n, size, 3), np.uint8)
    for c in range(3):
        strip[..., c] = rgbx[..., c]
    return strip.reshape(size, n * size, 3)


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

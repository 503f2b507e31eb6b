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
from numba import njit

from fsbench.data.images import encode_image
from fsbench.data.writer import write_item
from fsbench.generators.procedural.params import (
    DEFAULT_STRENGTHS,
    Identity,
    Strengths,
    draw_identity,
    draw_nuisance,
)
from fsbench.generators.procedural.render import CLASSES, EYE_G, HAIR, L_EYE, L_LIP, MOUTH, R_EYE, SKIN, U_LIP, render
from fsbench.generators.procedural.render import warm_caches as render_warm_caches

# The five region crops SegTex consumes, side by side in one JPEG strip, in this order:
# regions/<identity>/<stem>.jpg is (REGION_SIZE, 5 * REGION_SIZE, 3), crop k at columns
# [k * REGION_SIZE, (k + 1) * REGION_SIZE); pixels outside the region are black.
REGIONS = ("skin", "hair", "l_eye", "r_eye", "mouth")
_REGION_CLASSES = ((SKIN,), (HAIR,), (L_EYE,), (R_EYE,), (MOUTH, U_LIP, L_LIP))
_REGION_BIT = np.zeros(256, np.uint8)  # class index -> bit k of the region it belongs to (0: none)
for _k, _classes in enumerate(_REGION_CLASSES):
    _REGION_BIT[list(_classes)] = 1 << _k
REGION_SIZE = 64
AUX_DIRS = ("masks", "regions")  # the folders beside the image tree that `render_job` fills


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
    render_warm_caches(size)
    region_strip(np.zeros((size, size, 3), np.uint8), np.zeros((size, size), np.uint8))  # load its kernel


@functools.lru_cache(maxsize=8)
def _sample_steps(size: int) -> np.ndarray:
    """Where the `size` nearest-neighbour samples fall along a unit side."""
    return (np.arange(size) + 0.5) / size


@njit(cache=True, nogil=True)
def _span(bits, bit):
    """(first, last + 1) index whose entry has `bit` set; (0, len) if none has."""
    n = bits.shape[0]
    first, end = 0, n
    for k in range(n):
        if bits[k] & bit:
            first = k
            break
    for k in range(n - 1, -1, -1):
        if bits[k] & bit:
            end = k + 1
            break
    return first, end


# No fastmath (unlike the renderer's kernels): the source row of a sample is
# int(start + step * side) evaluated exactly as numpy would, so crops never shift by a pixel.
@njit(cache=True, nogil=True)
def _strip_kernel(image, labels, region_bit, steps, out):
    h, w = labels.shape
    size = steps.shape[0]
    # which regions each row and each column holds (bit k: region k)
    row_bits = np.zeros(h, np.uint8)
    col_bits = np.zeros(w, np.uint8)
    for y in range(h):
        acc = np.uint8(0)
        for x in range(w):
            b = region_bit[labels[y, x]]
            acc |= b
            col_bits[x] |= b
        row_bits[y] = acc
    cols = np.empty(size, np.intp)
    for k in range(out.shape[1] // size):
        bit = np.uint8(1 << k)
        top, bottom = _span(row_bits, bit)  # an absent region: the whole image (its crop is all black)
        left, right = _span(col_bits, bit)
        # the bounding square, 2 px more than the longer side, moved inside the image
        side = min(max(bottom - top, right - left) + 2, h, w)
        r0 = max(min((top + bottom - side) // 2, h - side), 0)
        c0 = max(min((left + right - side) // 2, w - side), 0)
        for j in range(size):
            cols[j] = int(c0 + steps[j] * side)
        for i in range(size):
            r = int(r0 + steps[i] * side)
            src, lab, dst = image[r], labels[r], out[i, k * size:(k + 1) * size]
            for j in range(size):
                c = cols[j]
                keep = np.uint8(region_bit[lab[c]] == bit)  # black outside the region
                dst[j, 0] = src[c, 0] * keep
                dst[j, 1] = src[c, 1] * keep
                dst[j, 2] = src[c, 2] * keep


def region_strip(image: np.ndarray, labels: np.ndarray, size: int = REGION_SIZE) -> np.ndarray:
    """(size, 5 * size, 3) uint8: each region's bounding square (nearest-neighbour resampled),
    pixels outside the region zeroed.

    A region absent from the image (an eye hidden in profile, a bald head) is all zeros.
    One compiled pass finds the five bounding boxes, one more fills the strip.
    """
    if labels.dtype != np.uint8 or image.dtype != np.uint8 or image.shape != (*labels.shape, 3):
        raise ValueError(f"region_strip wants a uint8 (h, w, 3) image and its uint8 (h, w) class map, "
                         f"got {image.dtype} {image.shape} and {labels.dtype} {labels.shape}")
    out = np.empty((size, len(REGIONS) * size, 3), np.uint8)
    _strip_kernel(np.ascontiguousarray(image), np.ascontiguousarray(labels), _REGION_BIT, _sample_steps(size), out)
    return out


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


def write_chunk(root: str, jobs: list[Job]) -> list[tuple[str, str, tuple[int, int] | None, dict]]:
    """Render jobs and write their files under `root` (a DatasetWriter's `partial` folder);
    returns what the writer journals: (identity, file name, (H, W), manifest row).

    Workers write their own files: on some disks creating a file costs more system time
    than rendering it, and one writing process would then cap the whole pool."""
    out = []
    for job in jobs:
        ident, name, jpeg, aux, row = render_job(job)
        out.append((ident, name, write_item(root, ident, name, jpeg, aux=aux, aux_dirs=AUX_DIRS), row))
    return out


__all__ = ["CLASSES", "REGIONS", "Job", "identity_name", "image_name", "region_strip", "render_arrays", "render_job",
           "write_chunk"]

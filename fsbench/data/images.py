"""Decoding and encoding images, with errors that name the file.

PIL is lazy: `Image.open` reads only the header, so a truncated file passes it and fails
later at `load()`. Both steps are wrapped here so every caller gets the same one-line
`DatasetError` ("<file>: truncated image") instead of PIL's traceback.

Sizes are checked from the header before anything is decoded: a 240-byte PNG can declare
1 x 40,000 or 20,000 x 20,000 pixels, and decoding (or resizing) it would take gigabytes.
Beyond `MAX_SIDE` pixels a side or `MAX_PIXELS` in all, an image is a bad item, named in one
line (``--skip-bad`` leaves it out), never a decompression bomb or an out-of-memory kill.
16-bit greyscale PNGs are brought to 8 bits by their high byte, not clipped to white.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from fsbench.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

# The largest image fsbench decodes: far beyond any face crop, and below PIL's own
# decompression-bomb warning (89 Mpx), so PIL never gets to warn first.
MAX_SIDE = 16_384
MAX_PIXELS = 64 * 1024 * 1024  # 64 Mpx: 192 MiB as uint8 RGB


def size_problem(h: int, w: int) -> str | None:
    """Why an image of (h, w) pixels is refused, or None when fsbench can decode it."""
    if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
        return (f"image declares {w}x{h} pixels, beyond fsbench's limit of {MAX_SIDE} pixels a side "
                f"and {MAX_PIXELS // (1024 * 1024)} Mpx in all (a corrupt or hostile header?)")
    return None


def _check_size(im: Image.Image, source: str | Path) -> None:
    w, h = im.size
    problem = size_problem(h, w)
    if problem:
        raise DatasetError(source, problem)


def _open(fp, source: str | Path) -> Image.Image:
    """`Image.open` with PIL's decompression-bomb warning made an error (our limit is
    lower, so the warning only ever fires for an image we refuse anyway)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(fp)
    try:
        _check_size(im, source)
    except DatasetError:
        im.close()
        raise
    return im


_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def _describe(exc: Exception) -> str:
    text = str(exc).lower()
    if isinstance(exc, _BOMB):
        return (f"image too large to decode ({exc}); fsbench's limit is {MAX_SIDE} pixels a side "
                f"and {MAX_PIXELS // (1024 * 1024)} Mpx in all")
    if "truncated" in text or isinstance(exc, EOFError):
        return "truncated image"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (unrecognised format)"
    return f"unreadable image ({exc.__class__.__name__}: {exc})"


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the header alone; cheap enough to check every file of a dataset."""
    try:
        with _open(path, path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DatasetError(path, "missing image") from None
    except (OSError, UnidentifiedImageError, ValueError, EOFError, *_BOMB) as exc:
        raise DatasetError(path, _describe(exc)) from None
    return h, w


def encoded_size(data: bytes) -> tuple[int, int] | None:
    """(H, W) from the header of JPEG or PNG bytes in memory, without decoding (a few
    microseconds where `Image.open` takes ~100); None for other formats or a header it
    cannot read, so the caller can fall back to `image_size` on the file."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return (h, w) if h and w else None
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:  # JPEG markers up to the frame header (SOFn) that holds the size
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..SOF15 (not DHT, JPG, DAC)
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return (h, w) if h and w else None
        elif marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    im.load()
    if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grey (PNG): keep the high byte
        grey = np.asarray(im)
        if grey.dtype.byteorder not in ("=", "|"):
            grey = grey.astype(grey.dtype.newbyteorder("="))
        grey = (np.clip(grey, 0, 65535) >> 8).astype(np.uint8)  # (H, W) 0..255
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB from a file; DatasetError naming it when it cannot be decoded."""
    try:
        with _open(path, path) as im:
            return _to_rgb_array(im)
    except FileNotFoundError:
        raise DatasetError(path, "missing image") from None
    except (OSError, UnidentifiedImageError, ValueError, EOFError, SyntaxError, *_BOMB) as exc:
        raise DatasetError(path, _describe(exc)) from None


def decode_image(data: bytes, source: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB from encoded bytes; `source` names where they came from."""
    hw = encoded_size(data)  # a PNG or JPEG header is checked before PIL sees the bytes
    problem = size_problem(*hw) if hw is not None else None
    if problem:
        raise DatasetError(source, problem)
    try:
        with _open(io.BytesIO(data), source) as im:
            return _to_rgb_array(im)
    except (OSError, UnidentifiedImageError, ValueError, EOFError, SyntaxError, *_BOMB) as exc:
        raise DatasetError(source, _describe(exc)) from None


def encode_image(array: np.ndarray, suffix: str = ".png", quality: int = 95) -> bytes:
    """Encode a uint8 HWC (or HW for masks) array; the suffix picks the codec."""
    suffix = suffix.lower()
    if array.dtype != np.uint8:
        raise ValueError(f"encode_image wants uint8, got {array.dtype}")
    if suffix in (".jpg", ".jpeg"):
        return _encode_jpeg(array, int(quality))
    im = Image.fromarray(array)
    buf = io.BytesIO()
    if suffix == ".png":
        im.save(buf, format="PNG", compress_level=1)  # fast; size matters less than speed here
    elif suffix in (".bmp", ".webp"):
        im.save(buf, format=suffix[1:].upper())
    else:
        raise ValueError(f"cannot encode images as {suffix!r}")
    return buf.getvalue()


def _encode_jpeg(array: np.ndarray, quality: int) -> bytes:
    """libjpeg-turbo through simplejpeg, chroma 4:2:0 as Pillow's default: half Pillow's
    cost at 112 px, where Pillow's save machinery costs more than the compression (the
    procedural world writes two JPEGs an item). Any JPEG reader decodes it."""
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
        gray = np.ascontiguousarray(array.reshape(array.shape[0], array.shape[1], 1))
        return simplejpeg.encode_jpeg(gray, quality, "GRAY", "Gray", fastdct=True)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"a JPEG holds (H, W) or (H, W, 3) pixels, got shape {array.shape}")
    return simplejpeg.encode_jpeg(np.ascontiguousarray(array), quality, "RGB", "420", fastdct=True)

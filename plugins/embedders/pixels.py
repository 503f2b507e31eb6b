"""`pixels`: raw pixels as an embedding, the baseline every learned embedder must beat.

Downsampled (box filter) to S x S, centred per image and L2-normalised, so cosine similarity
is the correlation of two thumbnails. On the embedded face world it shows how far plain
appearance gets you: identity should be poorly recoverable from pixels alone.
``--embedder pixels`` (S = 24) or ``pixels:S``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

import fsbench
from fsbench.api import Embedder
from fsbench.errors import UsageError


class PixelEmbedder(Embedder):
    name = "pixels"
    description = "downsampled, centred, L2-normalised pixels (a baseline, not a face model)"
    dim = 24 * 24 * 3
    input_size = (24, 24)
    batch_size = 256

    def __init__(self, option: str | None = None) -> None:
        super().__init__(option)
        try:
            side = int(option) if option else 24
        except ValueError:
            raise UsageError(f"pixels:{option}: the option is the thumbnail side in pixels, e.g. pixels:16") from None
        if not 2 <= side <= 512:
            raise UsageError(f"pixels:{option}: side must be between 2 and 512")
        self.side = side
        self.input_size = (side, side)
        self.dim = side * side * 3

    def embed(self, images: np.ndarray) -> np.ndarray:
        n, h, w, _ = images.shape
        s = self.side
        if h % s == 0 and w % s == 0:  # exact block means, no resampling error
            thumbs = images.reshape(n, s, h // s, s, w // s, 3).mean(axis=(2, 4), dtype=np.float32)
        else:  # box filter on float values (no rounding back to uint8)
            thumbs = np.stack([
                np.stack([np.asarray(Image.fromarray(im[..., c].astype(np.float32), mode="F")
                                     .resize((s, s), Image.Resampling.BOX)) for c in range(3)], axis=-1)
                for im in images
            ])  # (N, s, s, 3)
        flat = thumbs.reshape(n, -1).astype(np.float32)
        flat -= flat.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(flat, axis=1, keepdims=True)
        flat[:, 0] += (norms[:, 0] == 0)  # a flat image: any unit vector, not NaN
        return flat / np.linalg.norm(flat, axis=1, keepdims=True)


@fsbench.hookimpl
def fsbench_register_embedders():
    return [PixelEmbedder]

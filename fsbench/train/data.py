"""Training batches from any FaceDataset, in an order that depends only on (seed, epoch).

Because the order and the flips are pure functions of (seed, epoch, step), a resumed run
skips straight to its step and sees exactly the batches an uninterrupted run would have, and
N ranks together see exactly the batches one process would: global batch k holds positions
perm[k*B:(k+1)*B] of the epoch's permutation and rank r takes every world_size-th of them
(DistributedSampler's interleaving, without the padding: the last partial batch is dropped,
as arcface_torch does).

Images are resized to the model's input size only when they differ, with a named transform
("bilinear-antialias", recorded in the run's config.json). Small datasets are decoded once
into memory (`cache_images`); large ones stream from FaceDataset.batches' worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from fsbench import ui
from fsbench.data import FaceDataset
from fsbench.errors import UsageError

__all__ = ["RESIZE", "TrainBatches", "normalize", "resize_uint8"]

RESIZE = "bilinear-antialias"
CACHE_LIMIT_BYTES = 8 * 2**30  # above this, stream instead of caching (with a warning)


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, size, size, 3) uint8, antialiased bilinear; no-op when equal."""
    if images.shape[1:3] == (size, size):
        return images
    x = torch.from_numpy(np.require(images, requirements="W")).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1]: (x / 255 - 0.5) / 0.5, NCHW-contiguous
    (a permuted view would carry channels-last strides into every conv; see IResNet.forward_features)."""
    x = images.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format)
    return (x.float() / 255.0 - 0.5) / 0.5


class TrainBatches:
    """Fixed-size, shuffled, flipped batches of one rank's share of a FaceDataset."""

    def __init__(
        self,
        ds: FaceDataset,
        batch_size: int,
        input_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        flip: bool = True,
        cache: bool = True,
        workers: int = 0,
        show_progress: bool = True,
        indices: np.ndarray | None = None,
    ):
        if batch_size % world_size:
            raise UsageError(f"batch_size={batch_size} must divide evenly over {world_size} processes")
        # the items to train on: all, or a subset (SegTex's first-50-per-identity split)
        self.pool = np.arange(len(ds), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(self.pool) < batch_size:
            raise UsageError(
                f"{ds.root}: {len(self.pool)} training images are fewer than batch_size={batch_size} "
                "(lower -o batch_size)"
            )
        self.ds, self.batch_size, self.input_size = ds, batch_size, input_size
        self.seed, self.rank, self.world_size, self.flip = seed, rank, world_size, flip
        self.workers = workers
        self.steps_per_epoch = len(self.pool) // batch_size
        self.labels = ds.labels
        self._cache: np.ndarray | None = None
        need = len(self.pool) * input_size * input_size * 3
        if cache and need > CACHE_LIMIT_BYTES:
            ui.warn(f"{ds.root}: {need / 2**30:.1f} GiB decoded is too much to cache; streaming images instead")
            cache = False
        # decoded on the first epoch, not here: a finished run that is started again (the demo
        # run twice) then finds its last checkpoint without decoding the whole set first
        self._want_cache, self._show_progress = cache, show_progress

    def _decode_all(self, show_progress: bool) -> np.ndarray:
        # rows follow `pool`; `_row` maps a dataset position to its cache row
        out = np.empty((len(self.pool), self.input_size, self.input_size, 3), dtype=np.uint8)
        self._row = np.full(len(self.ds), -1, dtype=np.int64)
        self._row[self.pool] = np.arange(len(self.pool))
        batches = self.ds.batches(batch_size=256, workers=self.workers, indices=self.pool)
        total = -(-len(self.pool) // 256)
        it = ui.track(batches, "decoding images", total=total, unit="batches of 256") if show_progress else batches
        for b in it:
            out[self._row[b.index]] = resize_uint8(b.images, self.input_size)
        return out

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of the training items (the same on every rank)."""
        return self.pool[np.random.default_rng([self.seed, epoch]).permutation(len(self.pool))]

    def flips(self, step: int, n: int) -> np.ndarray:
        """Which of this rank's n images to mirror at global step `step`."""
        if not self.flip:
            return np.zeros(n, dtype=bool)
        return np.random.default_rng([self.seed, 1_000_003, step, self.rank]).random(n) < 0.5

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of `epoch` from step-in-epoch `start`: (uint8 B,S,S,3, int64 B)."""
        if self._want_cache and self._cache is None:
            self._cache = self._decode_all(self._show_progress)
        perm = self.order(epoch)
        steps = range(start, self.steps_per_epoch)
        shards = [perm[k * self.batch_size : (k + 1) * self.batch_size][self.rank :: self.world_size] for k in steps]
        if self._cache is not None:
            sources = ((self._cache[self._row[idx]], idx) for idx in shards)
        else:
            flat = np.concatenate(shards) if shards else np.empty(0, dtype=np.int64)
            per_rank = self.batch_size // self.world_size
            sources = (
                (resize_uint8(b.images, self.input_size), b.index)
                for b in self.ds.batches(batch_size=per_rank, workers=self.workers, indices=flat)
            )
        for k, (images, idx) in zip(steps, sources):
            global_step = epoch * self.steps_per_epoch + k
            flip = self.flips(global_step, len(idx))
            images = images.copy()
            images[flip] = images[flip, :, ::-1]
            yield torch.from_numpy(images), torch.from_numpy(self.labels[idx])

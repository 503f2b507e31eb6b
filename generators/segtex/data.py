"""SegTex's training data: each image with its 19-class map and its five region crops.

A dataset SegTex trains on is an ImageFolder with two companion trees (the embedded world
writes both; `fsbench data make procedural` without --no-masks):

    masks/<identity>/<stem>.png    uint8 (H, W) CelebAMask-HQ class map, 0 (background) ... 18
    regions/<identity>/<stem>.jpg  (R, 5R, 3): skin, hair, l_eye, r_eye, mouth side by side,
                                   black outside each region (generators.procedural.items.REGIONS)

Everything is brought to the networks' side S: images and crops by "bilinear-antialias"
(fsbench.train.data.resize_uint8), maps by nearest neighbour (labels stay labels). A missing
file, a map whose size is not its image's, a class index above 18 or a crop strip that is
not 5 squares of one size is a one-line DatasetError naming the file.

`SegTexBatches` is fsbench.train.data.TrainBatches' idea for these triples: the order is a
pure function of (seed, epoch), global batch k holds positions perm[k*B:(k+1)*B] and rank r
takes every world_size-th of them, so a resumed run and N ranks see exactly the batches of an
uninterrupted single process. No flips: a mirrored face swaps its eyes' crops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsbench import ui
from fsbench.data import FaceDataset
from fsbench.data.images import read_image
from fsbench.errors import DatasetError, UsageError
from fsbench.train.data import RESIZE, resize_uint8

__all__ = ["CLASSES", "REGIONS", "RESIZE", "SegTexBatches", "SegTexData", "nearest_map"]

CLASSES = 19  # CelebAMask-HQ's convention: background + 18 parts
REGIONS = ("skin", "hair", "l_eye", "r_eye", "mouth")  # the strip's order (generators.procedural.items)


def nearest_map(maps: np.ndarray, size: int) -> np.ndarray:
    """(B, H, W) uint8 -> (B, size, size): output (i, j) reads input (floor(i H / size), floor(j W / size))."""
    h, w = maps.shape[1:3]
    if (h, w) == (size, size):
        return maps
    rows, cols = np.arange(size) * h // size, np.arange(size) * w // size
    return np.ascontiguousarray(maps[:, rows][:, :, cols])


def read_map(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A class map, checked: one channel, the image's (H, W), classes 0 ... 18."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise DatasetError(path, f"a class map has one channel (mode L), this one is {im.mode}")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(path, "missing class map (SegTex trains on masks/; make the world without --no-masks)") \
            from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(path, f"unreadable class map ({exc.__class__.__name__})") from None
    if arr.shape != shape:
        raise DatasetError(path, f"class map is {arr.shape[1]}x{arr.shape[0]} but its image is {shape[1]}x{shape[0]}")
    top = int(arr.max())
    if top >= CLASSES:
        raise DatasetError(path, f"class index {top} is outside CelebAMask-HQ's 0-{CLASSES - 1}")
    return arr


def read_regions(path: Path) -> np.ndarray:
    """A (R, 5R, 3) strip -> (5, R, R, 3) crops in REGIONS' order."""
    if not path.exists():
        raise DatasetError(path, "missing region crops (SegTex's five crops of the image; make the world "
                                 "without --no-masks)")
    strip = read_image(path)
    r = strip.shape[0]
    if strip.shape[1] != len(REGIONS) * r:
        raise DatasetError(path, f"region strip is {strip.shape[1]}x{r}; expected the {len(REGIONS)} crops "
                                 f"{', '.join(REGIONS)} as {len(REGIONS)} squares side by side ({len(REGIONS) * r}x{r})")
    return np.ascontiguousarray(strip.reshape(r, len(REGIONS), r, 3).transpose(1, 0, 2, 3))


@dataclass
class Triples:
    """Items `index` of a dataset at side S: images (N, S, S, 3), maps (N, S, S), crops (N, 5, S, S, 3)."""

    index: np.ndarray
    images: np.ndarray
    maps: np.ndarray
    regions: np.ndarray


class SegTexData:
    """A FaceDataset read as SegTex's triples at side `size`; checked file by file when opened."""

    def __init__(self, ds: FaceDataset, size: int):
        self.ds, self.size = ds, size
        self.region_size: int | None = None  # R, from the first strip read
        self.check_files()

    def __len__(self) -> int:
        return len(self.ds)

    def check_files(self) -> None:
        """Every item has its map and crops (a stat each: the decode checks the rest)."""
        for i in range(len(self.ds)):
            for kind, suffix in (("masks", ".png"), ("regions", ".jpg")):
                path = self.ds.aux_path(kind, i, suffix)
                if not path.exists():
                    what = "class map" if kind == "masks" else "region crops"
                    raise DatasetError(path, f"missing {what} of {self.ds.items[i].path} (SegTex trains on masks/ "
                                             "and regions/; make the world without --no-masks)")

    def read(self, indices: Sequence[int]) -> Triples:
        idx = np.asarray(indices, dtype=np.int64)
        n, s = len(idx), self.size
        images = np.empty((n, s, s, 3), np.uint8)
        maps = np.empty((n, s, s), np.uint8)
        regions = np.empty((n, len(REGIONS), s, s, 3), np.uint8)
        for row, i in enumerate(idx):
            image = self.ds.read(int(i))
            images[row] = resize_uint8(image[None], s)[0]
            maps[row] = nearest_map(read_map(self.ds.aux_path("masks", int(i), ".png"), image.shape[:2])[None], s)[0]
            regions[row] = resize_uint8(self.crops(int(i)), s)
        return Triples(idx, images, maps, regions)

    def crops(self, i: int) -> np.ndarray:
        """Item i's five crops at their own size R (5, R, R, 3); R must be the dataset's one."""
        path = self.ds.aux_path("regions", i, ".jpg")
        crops = read_regions(path)
        r = crops.shape[1]
        if self.region_size is None:
            self.region_size = r
        elif r != self.region_size:
            raise DatasetError(path, f"region crops are {r} px but the dataset's first are {self.region_size} px")
        return crops

    def all_crops(self) -> np.ndarray:
        """Every item's crops at their own size (N, 5, R, R, 3): a texture pool (the sampler's),
        resized per draw, so the pool costs R^2, not S^2, a crop."""
        return np.stack([self.crops(i) for i in range(len(self))])

    def read_all(self, show_progress: bool = False, chunk: int = 256) -> Triples:
        parts = range(0, len(self), chunk)
        it = ui.track(parts, "decoding images, maps and crops", total=len(parts)) if show_progress else parts
        got = [self.read(range(k, min(k + chunk, len(self)))) for k in it]
        return Triples(*(np.concatenate([getattr(g, f) for g in got]) for f in ("index", "images", "maps", "regions")))


class SegTexBatches:
    """Fixed-size shuffled batches of one rank's share: dicts of uint8 tensors
    ``images`` (B, S, S, 3), ``maps`` (B, S, S), ``regions`` (B, 5, S, S, 3)."""

    def __init__(self, ds: FaceDataset, batch_size: int, size: int, seed: int, rank: int = 0, world_size: int = 1,
                 cache: bool = True, show_progress: bool = False):
        if batch_size % world_size:
            raise UsageError(f"batch_size={batch_size} must divide evenly over {world_size} processes")
        if len(ds) < batch_size:
            raise UsageError(f"{ds.root}: {len(ds)} training images are fewer than the batch of {batch_size} "
                             "(lower -o segmap_batch_size / texture_batch_size)")
        self.data = SegTexData(ds, size)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.steps_per_epoch = len(ds) // batch_size
        # decoded here, not on the first epoch: a bad map or strip is refused before any step
        self._cache = self.data.read_all(show_progress) if cache else None
        if self._cache is None:
            self.data.read([0])  # the first item sets (and checks) the crops' size

    @property
    def region_size(self) -> int:
        assert self.data.region_size is not None
        return self.data.region_size

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.data))

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict]:
        import torch

        perm = self.order(epoch)
        for k in range(start, self.steps_per_epoch):
            idx = perm[k * self.batch_size:(k + 1) * self.batch_size][self.rank::self.world_size]
            if self._cache is not None:
                t = Triples(idx, self._cache.images[idx], self._cache.maps[idx], self._cache.regions[idx])
            else:
                t = self.data.read(idx)
            yield {"images": torch.from_numpy(t.images), "maps": torch.from_numpy(t.maps),
                   "regions": torch.from_numpy(t.regions)}

"""Batches of decoded images from worker processes.

Decoding is the slow part of reading a dataset, and it is embarrassingly parallel, so batches
are decoded in a small process pool while the caller works on the previous one. Workers
write pixels straight into an anonymous shared memory map that they inherit at fork, one
slot per batch in flight, so only the list of failures goes back through a pipe (pickling
the pixels cost more than decoding them). At most `2 * workers` batches are in flight, so
memory stays bounded however large the dataset.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from fsbench.data.images import read_image
from fsbench.errors import DatasetError

if TYPE_CHECKING:
    from fsbench.data.dataset import FaceDataset


class Batch(NamedTuple):
    """What `FaceDataset.batches` yields (defined here so that the loader never imports the dataset)."""

    images: np.ndarray  # (B, H, W, 3) uint8
    labels: np.ndarray  # (B,) int64
    index: np.ndarray  # (B,) int64 positions in FaceDataset.items


# Below this many images a pool costs more than it saves.
MIN_ITEMS_FOR_WORKERS = 256


def default_workers(n_items: int) -> int:
    if n_items < MIN_ITEMS_FOR_WORKERS:
        return 0
    return max(1, min(4, os.cpu_count() or 1))


# The shared slots of the pool being forked: (mmap, slot shape). Children inherit it at fork.
_SLOTS: tuple[mmap.mmap, tuple[int, ...]] | None = None


def _decode_into_slot(slot: int, root: str, paths: list[str], size: tuple[int, int]) -> list[tuple[int, str]]:
    """Worker: decode into shared slot `slot`; only the failures travel back."""
    assert _SLOTS is not None
    buf, shape = _SLOTS
    n = int(np.prod(shape))
    out = np.frombuffer(buf, dtype=np.uint8, count=n, offset=slot * n).reshape(shape)[: len(paths)]
    return _decode_batch(root, paths, size, out)[1]


def _decode_batch(
    root: str, paths: list[str], size: tuple[int, int], out: np.ndarray | None = None
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode `paths` into `out`; failures come back as (position, reason) instead of raising."""
    if out is None:
        out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)
    failed: list[tuple[int, str]] = []
    for k, rel in enumerate(paths):
        try:
            img = read_image(os.path.join(root, rel))
        except DatasetError as exc:
            failed.append((k, exc.problem))
            continue
        if img.shape[:2] != size:
            failed.append((k, f"decoded to {img.shape[1]}x{img.shape[0]}, expected {size[1]}x{size[0]}"))
            continue
        out[k] = img
    return out, failed


def iter_batches(
    ds: FaceDataset, batch_size: int = 64, workers: int | None = None, indices: Sequence[int] | None = None
) -> Iterator[Batch]:
    order = np.arange(len(ds), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    labels = ds.labels
    root = str(ds.root)
    workers = default_workers(len(order)) if workers is None else workers

    def finish(chunk: np.ndarray, images: np.ndarray, failed: list[tuple[int, str]]) -> Batch:
        if failed:
            for k, reason in failed:
                rel = ds.items[chunk[k]].path
                if not ds.skip_bad:
                    raise DatasetError(ds.root / rel, reason)
                ds.skipped.append((rel, reason))
            keep = np.ones(len(chunk), dtype=bool)
            keep[[k for k, _ in failed]] = False
            images, chunk = images[keep], chunk[keep]
        return Batch(images, labels[chunk], chunk)

    def paths(chunk: np.ndarray) -> list[str]:
        return [ds.items[i].path for i in chunk]

    if workers <= 0:
        for chunk in chunks:
            yield finish(chunk, *_decode_batch(root, paths(chunk), ds.image_size))
        return

    if "fork" not in mp.get_all_start_methods():  # no fork (Windows, macOS spawn): pickled pixels
        with mp.get_context().Pool(workers) as pool:
            jobs = ((root, paths(c), ds.image_size) for c in chunks)
            for chunk, result in zip(chunks, pool.imap(_star_decode, jobs)):
                yield finish(chunk, *result)
        return

    global _SLOTS
    n_slots = 2 * workers
    shape = (batch_size, *ds.image_size, 3)
    slot_bytes = int(np.prod(shape))
    buf = mmap.mmap(-1, n_slots * slot_bytes)  # anonymous + shared: inherited by the forked workers
    _SLOTS = (buf, shape)
    try:
        pool = mp.get_context("fork").Pool(workers)
    finally:
        _SLOTS = None
    with pool:
        pending: deque = deque()
        free = deque(range(n_slots))
        it = iter(chunks)

        def submit(chunk: np.ndarray) -> None:
            slot = free.popleft()
            job = pool.apply_async(_decode_into_slot, (slot, root, paths(chunk), ds.image_size))
            pending.append((chunk, slot, job))

        for chunk in it:
            submit(chunk)
            if not free:
                break
        while pending:
            chunk, slot, job = pending.popleft()
            failed = job.get()
            view = np.frombuffer(buf, dtype=np.uint8, count=slot_bytes, offset=slot * slot_bytes).reshape(shape)
            images = view[: len(chunk)].copy()  # the slot is reused at once
            free.append(slot)
            nxt = next(it, None)
            if nxt is not None:
                submit(nxt)
            yield finish(chunk, images, failed)
    # buf is unmapped when the last view of it is garbage collected


def _star_decode(args: tuple) -> tuple[np.ndarray, list[tuple[int, str]]]:
    return _decode_batch(*args)

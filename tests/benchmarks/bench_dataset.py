"""FaceDataset read throughput vs a plain Pillow loop over the same files (issue 2).

Both decode the same 3,000 112x112 JPEGs to uint8 RGB arrays; the ratio is what counts
(target >= 1.0 with the loader's worker processes on). Median of 3 runs each.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from PIL import Image

from fsbench.data import FaceDataset

N_IDS, PER_ID, SIZE = 100, 30, 112


def _make(root):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(N_IDS):
        d = root / f"id_{i:04d}"
        d.mkdir(parents=True)
        for j in range(PER_ID):
            img = np.roll(base, i * 7 + j, axis=1)
            Image.fromarray(img).save(d / f"{j:03d}.jpg", quality=90)


def _pillow_loop(paths):
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB")))
    return len(out)


def _fsbench(ds, workers):
    return sum(len(b.index) for b in ds.batches(batch_size=64, workers=workers))


def _median_rate(fn, n):
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        assert fn() == n
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def test_read_throughput_ratio(tmp_path):
    _make(tmp_path / "ds")
    ds = FaceDataset.open(tmp_path / "ds")
    n = len(ds)
    paths = [ds.abspath(i) for i in range(n)]
    _pillow_loop(paths)  # warm the page cache so neither side pays for the first disk read
    base = _median_rate(lambda: _pillow_loop(paths), n)
    serial = _median_rate(lambda: _fsbench(ds, 0), n)
    workers = _median_rate(lambda: _fsbench(ds, 2), n)
    print(f"\n[bench_dataset] {n} images {SIZE}x{SIZE} JPEG: Pillow loop {base:,.0f} img/s; "
          f"FaceDataset serial {serial:,.0f} img/s ({serial / base:.2f}x); "
          f"FaceDataset 2 workers {workers:,.0f} img/s ({workers / base:.2f}x)")
    assert workers / base >= 1.0

"""Identity-metric speed (issue 4). Run with `make bench`; figures are printed (-s).

1. SEP's nearest-other-centre search on N = 200,000 embeddings x C = 10,000 identities,
   D = 512: time as a ratio to one plain ``E @ C.T`` of the same size in the same run
   (target <= 1.5x), and tracemalloc peak of the search at N = 50k and 200k (target: the
   part beyond the O(N) result arrays does not grow with N).
2. dlib embedder: images/s with its worker processes vs a plain per-image dlib loop
   (detector + 5 landmarks + chip + descriptor) on the same images (target >= 1.6x, 2 cores).

``FSBENCH_BENCH_N`` scales N down on a small machine (the baseline needs N x C x 4 bytes).
"""

from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import pytest

from fsbench.plugins.metrics import _identity_math as im

N = int(os.environ.get("FSBENCH_BENCH_N", 200_000))
C, D = 10_000, 512


def _unit(rng, n, d):
    v = rng.standard_normal((n, d), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def _mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def test_sep_nearest_centre_vs_plain_matmul():
    rng = np.random.default_rng(0)
    e = _unit(rng, N, D)
    labels = rng.integers(0, C, N)
    centres = im.class_centres(e, labels, C)

    need = N * C * 4
    if _mem_available() < need + (2 << 30):
        pytest.skip(f"the plain E @ C.T baseline needs {need / 2**30:.1f} GiB free; set FSBENCH_BENCH_N lower")

    t0 = time.perf_counter()
    full = e @ centres.T  # (N, C) float32: the baseline
    t_plain = time.perf_counter() - t0
    del full

    t0 = time.perf_counter()
    best, arg = im.nearest_centre(e, centres, labels)
    t_ours = time.perf_counter() - t0

    # spot-check correctness on a slice
    s = e[:500] @ centres.T
    s[np.arange(500), labels[:500]] = -np.inf
    np.testing.assert_allclose(best[:500], s.max(1), atol=1e-5)

    ratio = t_ours / t_plain
    gflop = 2 * N * C * D / 1e9
    print(
        f"\n[sep] N={N:,} C={C:,} D={D}: plain E@C.T {t_plain:.2f} s ({gflop / t_plain:.0f} GFLOP/s, "
        f"{need / 2**30:.1f} GiB result); chunked nearest-other-centre {t_ours:.2f} s -> ratio {ratio:.2f}x "
        "(target <= 1.5x)"
    )
    assert ratio < 3.0


def test_sep_peak_memory_independent_of_n():
    rng = np.random.default_rng(1)
    centres = _unit(rng, C, D)
    peaks = {}
    for n in (N // 4, N):
        e = _unit(rng, n, D)
        labels = rng.integers(0, C, n)
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        im.nearest_centre(e, centres, labels)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        outputs = n * (4 + 8)  # best (float32) + argmax (int64)
        peaks[n] = (peak, peak - outputs)
        del e
    lines = ", ".join(f"N={n:,}: peak {p / 2**20:.1f} MiB ({q / 2**20:.1f} MiB beyond the O(N) results)"
                      for n, (p, q) in peaks.items())
    print(f"\n[sep memory] {lines}; a plain N x C matrix at N={N:,} would be {N * C * 4 / 2**30:.1f} GiB")
    small, large = (q for _, q in peaks.values())
    assert large < small * 1.25 + (8 << 20)


# --------------------------------------------------------------------------- dlib


def _face_images(n: int) -> np.ndarray:
    """n real face photographs (two people, shifted and mirrored), 250 x 250."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    photos = [np.asarray(hopper.resize((300, 350))), np.asarray(Image.fromarray(skimage.data.astronaut()).resize((350, 350)))]
    out = []
    for k in range(n):
        p = photos[k % 2]
        dy, dx = (k * 7) % 40, (k * 11) % 40
        crop = p[dy : dy + 300, dx : dx + 300]
        crop = crop[:, ::-1] if (k // 2) % 2 else crop
        out.append(np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((250, 250))))
    return np.stack(out)


def _plain_dlib_loop(images, files):
    import dlib

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(files["landmarks"]))
    rec = dlib.face_recognition_model_v1(str(files["recognition"]))
    out = []
    t0 = time.perf_counter()
    for img in images:
        faces = det(img, 1)
        if not faces:
            out.append(None)
            continue
        chip = dlib.get_face_chip(img, sp(img, faces[0]), size=150)
        out.append(np.asarray(rec.compute_face_descriptor(chip)))
    return time.perf_counter() - t0, out


def _cpu_seconds() -> tuple[float, float]:
    """(this process, reaped children) user + system CPU seconds."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _spin(n: int) -> float:
    t0 = time.perf_counter()
    s = 0
    for i in range(n):
        s += i * i
    return time.perf_counter() - t0


def _machine_scaling(workers: int) -> float:
    """How much faster `workers` processes finish pure-Python work than one: the ceiling any
    worker pool can reach on this machine right now (a busy or SMT-shared core shows here)."""
    import multiprocessing as mp

    n = 5_000_000
    one = _spin(n)
    with mp.get_context("fork").Pool(workers) as pool:
        t0 = time.perf_counter()
        pool.map(_spin, [n] * workers)
        wall = time.perf_counter() - t0
    return workers * one / wall


def test_dlib_workers_vs_plain_loop():
    """Wall-clock ratio (the target), plus CPU seconds per image of both paths: on a shared
    machine the wall ratio mostly measures the other tenants, while equal CPU cost per image
    shows the worker path adds no overhead, so it scales with the free cores."""
    from fsbench.plugins.embedders import dlib as dlib_mod

    if not dlib_mod.weights_available():
        pytest.skip("dlib weights (face_recognition_models) not installed")
    images = _face_images(64)
    c0 = _cpu_seconds()
    t_plain, plain = _plain_dlib_loop(images, dlib_mod.model_files())
    cpu_plain = _cpu_seconds()[0] - c0[0]

    workers = dlib_mod._default_workers()
    emb = dlib_mod.DlibEmbedder("detect", workers=workers)
    try:
        emb.embed(images[: 2 * workers])  # start the pool and load the models once
        c0 = _cpu_seconds()
        t0 = time.perf_counter()
        vecs = emb.embed(images)
        t_ours = time.perf_counter() - t0
    finally:
        emb.close()  # joins the workers, so their CPU time is counted below
    c1 = _cpu_seconds()
    cpu_ours = (c1[0] - c0[0]) + (c1[1] - c0[1])  # children: includes the warm-up call (small)
    ceiling = _machine_scaling(workers)
    found = sum(v is not None for v in plain)
    n = len(images)
    print(
        f"\n[dlib] {n} images 250x250 ({found} faces found): plain loop {n / t_plain:.1f} img/s, "
        f"embedder with {workers} workers {n / t_ours:.1f} img/s -> {t_plain / t_ours:.2f}x "
        f"(target >= 1.6x on 2 cores); CPU s/img plain {cpu_plain / n:.3f} vs workers {cpu_ours / n:.3f}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
        f"this machine's own {workers}-process scaling on pure-Python work: {ceiling:.2f}x"
    )
    assert len(emb.failures()) == n - found
    assert vecs.shape == (n, 128)

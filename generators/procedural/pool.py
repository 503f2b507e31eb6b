"""Rendering jobs in worker processes, in order: shared by the dataset (`make`) and the
benchmarks (`bench`), so that neither imports the other."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from functools import partial

from fsbench.generators.procedural.items import Job, render_chunk, warm_caches, write_chunk

# Items per task sent to a worker, at most. Each task is a round trip through the pool's
# queues that wakes the main process, which competes with the workers for the cores: main
# process CPU per item was 0.15-0.19 ms with tasks of 8 items, 0.08-0.09 ms with 32.
CHUNK = 32


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def tasks(jobs: list, workers: int) -> list[list]:
    """The jobs cut into tasks for `workers` processes, in order: up to CHUNK jobs each and
    at least 4 tasks a worker, the last 2 tasks a worker a quarter as long (the run ends
    with its last task, and a worker done before the other idles for up to a task)."""
    workers = max(workers, 1)
    size = max(1, min(CHUNK, -(-len(jobs) // (4 * workers))))
    head = len(jobs) - min(len(jobs), 2 * workers * size)
    small = max(1, size // 4)
    return ([jobs[i:min(i + size, head)] for i in range(0, head, size)]
            + [jobs[i:i + small] for i in range(head, len(jobs), small)])


def run_jobs(jobs: list[Job], workers: int | None, write_to: str | None = None) -> Iterator[tuple]:
    """Render jobs in order, in `workers` processes (1 = in this process).

    Yields `render_job`'s tuples, or with `write_to` (a DatasetWriter's partial folder)
    writes each item's files there and yields `write_chunk`'s (identity, name, size, row)."""
    workers = default_workers() if workers is None else int(workers)
    chunks = tasks(jobs, workers)
    work = render_chunk if write_to is None else partial(write_chunk, write_to)
    if workers <= 1 or len(chunks) <= 1:
        for c in chunks:
            yield from work(c)
        return
    # the noise bank and the compiled kernels: loaded once here, inherited by forked workers
    warm_caches(jobs[0].size)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        for result in pool.imap(work, chunks):
            yield from result

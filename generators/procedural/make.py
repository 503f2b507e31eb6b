"""Writing a procedural dataset: worker processes render and write items, the main process journals them.

Resumable through `DatasetWriter`: items already in the journal are skipped, so a killed
`data make` continues where it stopped and produces the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

from fsbench import ui
from fsbench.errors import UsageError
from generators.procedural.items import (
    AUX_DIRS,
    REGION_SIZE,
    REGIONS,
    Job,
    identity_name,
    image_name,
    render_chunk,
    warm_caches,
    write_chunk,
)
from generators.procedural.params import DEFAULT_STRENGTHS, HAIR_STYLES, HELD_OUT_BASE, Strengths
from generators.procedural.render import CLASSES

# Items per task sent to a worker, at most. Each task is a round trip through the pool's
# queues that wakes the main process, which competes with the workers for the cores: main
# process CPU per item was 0.15-0.19 ms with tasks of 8 items, 0.08-0.09 ms with 32.
CHUNK = 32


def check_options(n_ids: int, per_id: int, size: int, seed: int, region_size: int = REGION_SIZE) -> None:
    """One-line errors for impossible requests, before anything is written."""
    if n_ids < 1:
        raise UsageError(f"--ids must be at least 1 (got {n_ids})")
    if n_ids > HELD_OUT_BASE:
        raise UsageError(f"--ids must be at most {HELD_OUT_BASE:,}: identities from there on are held out for benchmarks")
    if per_id < 1:
        raise UsageError(f"--per-id must be at least 1 (got {per_id})")
    if size < 32:
        raise UsageError(f"--size must be at least 32 pixels (got {size})")
    if size > 512:
        raise UsageError(f"--size must be at most 512 pixels (got {size})")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0 (got {seed})")
    if region_size < 8:
        raise UsageError(f"region_size must be at least 8 pixels (got {region_size})")


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


def make_dataset(
    out_dir: Path,
    *,
    n_ids: int,
    per_id: int,
    seed: int = 0,
    size: int = 112,
    masks: bool = True,
    region_size: int = REGION_SIZE,
    resume: bool = False,
    overwrite: bool = False,
    benchmark: bool = False,
    bench_pairs: int = 6000,
    workers: int | None = None,
    strengths: Strengths = DEFAULT_STRENGTHS,
    first_id: int = 0,
):
    """Write identities first_id .. first_id + n_ids - 1, `per_id` images each; returns the FaceDataset."""
    from fsbench.data import DatasetWriter
    from generators.procedural.bench import check_bench_pairs, write_benchmarks

    check_options(n_ids, per_id, size, seed, region_size)
    if first_id < 0 or first_id + n_ids > HELD_OUT_BASE:
        raise UsageError(f"training identities must lie in [0, {HELD_OUT_BASE:,})")
    if benchmark:
        check_bench_pairs(bench_pairs)
    out_dir = Path(out_dir)
    info: dict[str, Any] = {
        "generator": "procedural",
        "config": {
            "seed": seed, "n_ids": n_ids, "per_id": per_id, "size": size, "masks": masks,
            "first_id": first_id, "strengths": asdict(strengths),
        },
        "classes": list(CLASSES),
        "hair_styles": list(HAIR_STYLES),
    }
    if masks:
        info["regions"] = {"order": list(REGIONS), "size": region_size,
                           "layout": "regions/<identity>/<stem>.jpg: the crops side by side, (size, 5*size, 3); "
                                     "outside each region black; an absent region all black"}
    if resume and not overwrite:
        _check_resume(out_dir, info["config"])
    writer = DatasetWriter(out_dir, resume=resume, overwrite=overwrite, info=info,
                           aux_dirs=(*AUX_DIRS, "benchmarks"))
    try:
        jobs = [
            Job(seed, i, j, size, masks, region_size, strengths=strengths)
            for i in range(first_id, first_id + n_ids)
            for j in range(per_id)
            if not writer.has(identity_name(i), image_name(j))
        ]
        done = run_jobs(jobs, workers, write_to=str(writer.partial))
        for ident, name, hw, row in ui.track(done, "rendering faces", total=len(jobs)):
            writer.record(ident, name, hw, meta=row)
        dataset = writer.finalize()
    except BaseException:
        writer.close()
        raise
    if benchmark:
        write_benchmarks(out_dir / "benchmarks", seed=seed, size=size, pairs=bench_pairs,
                         workers=workers, strengths=strengths, resume=resume or overwrite)
    return dataset


def _check_resume(out_dir: Path, config: dict[str, Any]) -> None:
    """Refuse to extend a dataset made with another seed, size, masks or nuisance setting:
    the result would mix two worlds (or two image sizes) in one folder."""
    import json

    done = out_dir / "dataset.json"
    journal = out_dir.with_name(out_dir.name + ".partial") / "manifest.jsonl"
    old: dict[str, Any] = {}
    if done.exists():
        try:
            old = json.loads(done.read_text()).get("config", {})
        except (OSError, json.JSONDecodeError):
            return  # the writer reports an unreadable dataset itself
    elif journal.exists():
        with open(journal, encoding="utf-8") as fh:
            first = fh.readline()
        try:
            row = json.loads(first)
            old = {"seed": row.get("seed")}
        except json.JSONDecodeError:
            return
    keys = ("seed", "size", "masks", "strengths")
    new = json.loads(json.dumps({k: config[k] for k in keys}))
    diff = [k for k in keys if k in old and old[k] != new[k]]
    if diff:
        shown = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in diff if k != "strengths")
        raise UsageError(f"{out_dir}: cannot resume with different settings ({shown or 'nuisance strengths'}); "
                         "use the original options, or --overwrite")


def with_strengths(**changes: Any) -> Strengths:
    """`Strengths` with some fields replaced; unknown names are refused by name."""
    known = set(asdict(DEFAULT_STRENGTHS))
    bad = sorted(set(changes) - known)
    if bad:
        raise UsageError(f"unknown nuisance strength(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
    typed: dict[str, Any] = {}
    for key, value in changes.items():
        default = getattr(DEFAULT_STRENGTHS, key)
        try:
            if isinstance(default, tuple):
                parts = value.split(",") if isinstance(value, str) else list(value)
                typed[key] = tuple(type(d)(p) for d, p in zip(default, parts, strict=True))
            else:
                typed[key] = type(default)(value)
        except (TypeError, ValueError):
            raise UsageError(f"nuisance strength {key}={value!r} is not a {type(default).__name__}"
                             + (" pair like 0.3,0.7" if isinstance(default, tuple) else "")) from None
    return replace(DEFAULT_STRENGTHS, **typed)

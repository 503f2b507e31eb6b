"""Writing a procedural dataset: worker processes render and write items, the main process journals them.

Resumable through `DatasetWriter`: items already in the journal are skipped, so a killed
`data make` continues where it stopped and produces the same bytes as an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fsbench import ui
from fsbench.errors import UsageError
from fsbench.generators.procedural.bench import check_bench_pairs, write_benchmarks
from fsbench.generators.procedural.items import AUX_DIRS, REGION_SIZE, REGIONS, Job, identity_name, image_name
from fsbench.generators.procedural.params import DEFAULT_STRENGTHS, HAIR_STYLES, HELD_OUT_BASE, Strengths
from fsbench.generators.procedural.pool import run_jobs
from fsbench.generators.procedural.render import CLASSES


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
        for ident, name, hw, row in ui.track(done, "rendering faces", total=len(jobs), unit="images"):
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
    """`Strengths` with some fields replaced: converted, range-checked and unknown names refused
    by `fsbench.options` (``-o yaw_sd=nan`` is a one-line error, not a NaN world)."""
    from fsbench.options import parse

    return parse(Strengths, changes, where="procedural", base=DEFAULT_STRENGTHS, what="nuisance strength")

"""Verification benchmarks over held-out identities, in three protocols.

Identities come from ``HELD_OUT_BASE + protocol * 1,000,000 + ...``, a range no training
set can reach (training indices stay below HELD_OUT_BASE whatever ``--ids`` is), and the
benchmark size never depends on ``--ids``: P pairs per protocol (``--bench-pairs``, LFW's
6,000 by default) take P / 2 identities and 2 P images, so ``--benchmark`` adds 6 P images
(36,000 at the default) to any world, however small (`describe_benchmarks` says so).

Layout, as LFW: 10 folds; each fold holds `pairs / 20` positive pairs then as many negative
pairs. Fold f uses its own identities (none shared between folds). Identity k of a fold
gives four images: 0 and 1 form its positive pair, 2 meets image 3 of another identity of
the same fold in a negative pair. What differs between protocols is the nuisance:

- ``lfw_like``: every image near-frontal with mild nuisance;
- ``cfp_fp_like``: images 0 and 2 near-frontal, images 1 and 3 near-profile (|yaw| >= 45);
- ``agedb_like``: full training nuisance, and images 0/2 and 1/3 lie 16-36 years apart.

Written per protocol under ``benchmarks/<name>/``: ``images/<identity>/<n>.jpg``,
``pairs.csv`` (path_a, path_b, same, fold; paths relative to that folder), ``<name>.bin``
(insightface's pack) and ``bench.json`` (the settings, so a resume can tell it is done).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from fsbench import ui
from fsbench.data.writer import move_into_place
from fsbench.errors import UsageError
from fsbench.generators.procedural.items import Job, identity_name, image_name
from fsbench.generators.procedural.params import DEFAULT_STRENGTHS, HELD_OUT_BASE, PROTOCOLS, Strengths

BENCHMARKS = ("lfw_like", "cfp_fp_like", "agedb_like")
FOLDS = 10


def check_bench_pairs(pairs: int) -> None:
    if pairs < 2 * FOLDS or pairs % (2 * FOLDS):
        raise UsageError(f"--bench-pairs must be a positive multiple of {2 * FOLDS} "
                         f"(10 folds of as many positive as negative pairs); got {pairs}")


def benchmark_images(pairs: int) -> int:
    """Images one protocol renders for `pairs` pairs: four per held-out identity (0 and 1 its
    positive pair, 2 and 3 one side of two negative pairs), `pairs` / 2 identities."""
    return 2 * pairs


def describe_benchmarks(pairs: int, where: Path | str, protocols: tuple[str, ...] = BENCHMARKS) -> str:
    """The one line `fsbench data make procedural --benchmark` prints before rendering."""
    n = len(protocols)
    return (f"benchmarks: {n} x {pairs:,} pairs ({', '.join(protocols)}; 10 folds, {pairs // 2:,} held-out identities "
            f"each) = {n * benchmark_images(pairs):,} more images under {where}, whatever --ids "
            "(--bench-pairs sets the pairs)")


def bench_identity(protocol: str, fold: int, k: int, per_fold: int) -> int:
    return HELD_OUT_BASE + PROTOCOLS[protocol] * 1_000_000 + fold * per_fold + k


def bench_job(seed: int, protocol: str, identity: int, image: int, size: int,
              strengths: Strengths = DEFAULT_STRENGTHS) -> Job:
    """The job of one benchmark image: a pure function of (seed, protocol, identity, image)."""
    if protocol == "lfw_like":
        return Job(seed, identity, image, size, False, protocol=protocol, frontal=True, strengths=strengths)
    if protocol == "cfp_fp_like":
        profile = image % 2 == 1
        return Job(seed, identity, image, size, False, protocol=protocol, frontal=not profile, profile=profile,
                   strengths=strengths)
    if protocol == "agedb_like":
        r = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, identity, image // 2, 31337])))
        gap = float(r.uniform(16, 36))
        offset = -gap / 2 if image % 2 == 0 else gap / 2
        return Job(seed, identity, image, size, False, protocol=protocol, age_offset=offset, strengths=strengths)
    raise UsageError(f"unknown benchmark protocol {protocol!r} (known: {', '.join(BENCHMARKS)})")


def pair_plan(seed: int, protocol: str, pairs: int) -> list[tuple[int, int, int, int, bool, int]]:
    """[(identity a, image a, identity b, image b, same, fold)] in file order."""
    per_fold = pairs // (2 * FOLDS)
    plan = []
    for fold in range(FOLDS):
        ids = [bench_identity(protocol, fold, k, per_fold) for k in range(per_fold)]
        for i in ids:
            plan.append((i, 0, i, 1, True, fold))
        r = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, PROTOCOLS[protocol], fold, 4242])))
        shift = int(r.integers(1, per_fold)) if per_fold > 1 else 0
        order = r.permutation(per_fold)
        for j in range(per_fold):
            a = ids[order[j]]
            b = ids[order[(j + shift) % per_fold]]
            if a == b:  # per_fold == 1: borrow the next fold's pool, still held out
                b = bench_identity(protocol, (fold + 1) % FOLDS, 0, per_fold)
            plan.append((a, 2, b, 3, False, fold))
    return plan


def _settings(seed: int, size: int, pairs: int, strengths: Strengths) -> dict:
    from dataclasses import asdict

    return {"seed": seed, "size": size, "pairs": pairs, "folds": FOLDS, "strengths": asdict(strengths)}


def write_benchmark(root: Path, protocol: str, *, seed: int, size: int, pairs: int, workers: int | None,
                    strengths: Strengths = DEFAULT_STRENGTHS) -> Path:
    """Write one protocol's folder atomically (temporary name, then rename)."""
    from fsbench.data import write_item
    from fsbench.data.binpack import write_bin
    from fsbench.data.writer import write_csv
    from fsbench.generators.procedural.pool import run_jobs

    final = root / protocol
    tmp = root / f".{protocol}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    plan = pair_plan(seed, protocol, pairs)
    keys = sorted({(a, ia) for a, ia, *_ in plan} | {(b, ib) for _, _, b, ib, *_ in plan})
    jobs = [bench_job(seed, protocol, i, j, size, strengths) for i, j in keys]
    encoded: dict[tuple[int, int], bytes] = {}
    rows = []
    rendered = ui.track(run_jobs(jobs, workers), f"benchmark {protocol}", total=len(jobs), unit="images")
    for (i, j), (ident, name, jpeg, _aux, row) in zip(keys, rendered):
        write_item(tmp / "images", ident, name, jpeg)
        encoded[(i, j)] = jpeg
        rows.append({"path": f"images/{ident}/{name}", **row})
    write_csv(tmp / "manifest.csv", rows)

    def rel(i: int, j: int) -> str:
        return f"images/{identity_name(i)}/{image_name(j)}"

    write_csv(tmp / "pairs.csv", [{"path_a": rel(a, ia), "path_b": rel(b, ib), "same": int(same), "fold": fold}
                                  for a, ia, b, ib, same, fold in plan])
    bins = [encoded[(a, ia)] if t == 0 else encoded[(b, ib)] for a, ia, b, ib, _s, _f in plan for t in (0, 1)]
    write_bin(tmp / f"{protocol}.bin", bins, [p[4] for p in plan])
    (tmp / "bench.json").write_text(json.dumps(_settings(seed, size, pairs, strengths), indent=2) + "\n")
    move_into_place(tmp, final)
    return final


def is_complete(folder: Path, settings: dict) -> bool:
    try:
        done = json.loads((folder / "bench.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return done == settings and (folder / f"{folder.name}.bin").exists() and (folder / "pairs.csv").exists()


def write_benchmarks(root: Path, *, seed: int, size: int, pairs: int = 6000, workers: int | None = None,
                     strengths: Strengths = DEFAULT_STRENGTHS, resume: bool = True,
                     protocols: tuple[str, ...] = BENCHMARKS) -> dict[str, Path]:
    """All protocols under `root`; ones already complete with the same settings are kept."""
    check_bench_pairs(pairs)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for protocol in protocols:
        folder = root / protocol
        if resume and is_complete(folder, json.loads(json.dumps(_settings(seed, size, pairs, strengths)))):
            out[protocol] = folder
            continue
        out[protocol] = write_benchmark(root, protocol, seed=seed, size=size, pairs=pairs, workers=workers,
                                        strengths=strengths)
    return out

"""Calibration of the embedded world (issue 5): the `tiny` FR preset on 1,000 x 8 training
images must verify the three held-out benchmarks at 75-97 %: hard enough that a better
training set shows, easy enough that the protocol measures something.

This reproduces the README's calibration table (about 7 minutes on 2 cores): render the
world with its benchmarks, train `tiny`, verify with flip TTA, and print raw pixels beside it
as the floor (what no learning gives). Run with `make bench`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fsbench.data.pairs import open_pairs
from fsbench.generators.procedural.make import make_dataset
from fsbench.registry import get_registry
from fsbench.train.fr import train_fr
from fsbench.verification import verify_embedder

IDS, PER_ID, SEED, PAIRS = 1000, 8, 0, 6000
BENCHMARKS = ("lfw_like", "cfp_fp_like", "agedb_like")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("calibration") / "world"
    make_dataset(root, n_ids=IDS, per_id=PER_ID, seed=SEED, benchmark=True, bench_pairs=PAIRS)
    return root


def test_tiny_preset_lands_between_75_and_97_percent(world: Path, tmp_path: Path) -> None:
    run = train_fr(world, tmp_path / "fr", "tiny")
    rows = {}
    for spec in (f"iresnet:{run.run_dir}", "pixels"):
        embedder = get_registry().embedder(spec)
        for name in BENCHMARKS:
            res = verify_embedder(embedder, open_pairs(world / "benchmarks" / name / f"{name}.bin"), flip=True)
            rows[spec.split(":")[0], name] = res
    print(f"\ncalibration: tiny preset, {IDS} ids x {PER_ID} images, seed {SEED}, {run.seconds:.0f} s training")
    print("| embedder | " + " | ".join(BENCHMARKS) + " |")
    for emb in ("iresnet", "pixels"):
        cells = [f"{100 * rows[emb, b].accuracy:.1f} ± {100 * rows[emb, b].std:.1f}" for b in BENCHMARKS]
        print(f"| {emb} | " + " | ".join(cells) + " |")
    for name in BENCHMARKS:
        assert 0.75 <= rows["iresnet", name].accuracy <= 0.97, name
        assert rows["pixels", name].accuracy < rows["iresnet", name].accuracy

"""`data make procedural --benchmark` does not scale its pairs with --ids: it says what it adds
(one line on stderr, before rendering), its --help says so, and the count is the files written."""

from __future__ import annotations

import json
import re

import pytest

from fsbench.generators.procedural.bench import BENCHMARKS, benchmark_images, pair_plan


@pytest.mark.parametrize("pairs", [20, 40, 600, 6000])
def test_benchmark_images_counts_the_images_of_the_pair_plan(pairs):
    for protocol in BENCHMARKS:
        plan = pair_plan(0, protocol, pairs)
        images = {(a, ia) for a, ia, *_ in plan} | {(b, ib) for _, _, b, ib, *_ in plan}
        assert len(plan) == pairs and len(images) == benchmark_images(pairs) == 2 * pairs


def test_benchmark_says_what_it_adds_and_writes_exactly_that(cli, tmp_path):
    out = tmp_path / "w"
    result = cli("data", "make", "procedural", "--out", out, "--ids", "2", "--per-id", "2", "--size", "32",
                 "--no-masks", "--benchmark", "--bench-pairs", "20", "--workers", "1", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # stdout: the one JSON object, the line went to stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("benchmarks:")]
    assert lines == [f"benchmarks: 3 x 20 pairs (lfw_like, cfp_fp_like, agedb_like; 10 folds, 10 held-out identities "
                     f"each) = 120 more images under {out / 'benchmarks'}, whatever --ids (--bench-pairs sets the pairs)"]
    written = sorted((out / "benchmarks").glob("*/images/*/*.jpg"))
    assert len(written) == 120 == data["benchmark_images"] and data["benchmark_pairs"] == 20
    assert data["images"] == 4  # the world itself: --ids x --per-id


def test_a_bad_bench_pairs_is_refused_before_the_line(cli, tmp_path):
    result = cli("data", "make", "procedural", "--out", tmp_path / "w", "--ids", "2", "--per-id", "2",
                 "--benchmark", "--bench-pairs", "30")
    assert result.exit_code == 2 and "--bench-pairs must be a positive multiple of 20" in result.stderr
    assert "benchmarks:" not in result.stderr and not (tmp_path / "w").exists()


def test_help_documents_what_benchmark_adds(cli):
    text = re.sub(r"-\s+", "-", " ".join(cli("data", "make", "procedural", "--help").stdout.split()))  # unwrapped
    assert "36,000 images in all at the default 6,000 pairs" in text
    assert "two images per pair (36,000 images at the default), whatever --ids" in text

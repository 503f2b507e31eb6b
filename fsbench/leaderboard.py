"""The generator leaderboard published in ``reports/leaderboard/``: ``make report``, or
``python -m fsbench.leaderboard``.

`fsbench.demo.run_comparison` at a larger size than the demo: the held-out real set of the
embedded world, a second real set (a row too: the numbers a perfect generator would get,
and the noise of each), the procedural world with its default nuisance and with little
intra-class diversity, and VIGFace's and SegTex's embedded defaults; each scored by the
default judge (CST, DIV, SEP; IoU, leakage, FD, KID, PRDC against the real set, KID and
PRDC in the judge's space since the FID Inception's weights are not shipped) and trained on
(one `tiny` FR model per set, accuracy on the world's three benchmarks, gap to the
real-trained model: VIGFace Table 2).

The published folder holds what `write_report` writes (report.md, report.html, results.csv
and .parquet, table.tex, provenance.json, the figures as PNG and SVG) without the sample
grids, so that it stays small, plus fr_benchmark.md (Table 2's layout) and timings.json.
Datasets, samples, FR models and embeddings stay in ``--work`` (build/leaderboard): a second
run reuses them and only scores and reports again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TITLE = "Generator leaderboard: the embedded face world, scored by the default judge"
IDS, PER_ID, BENCH_PAIRS = 100, 10, 3000


def build(out: Path, work: Path, *, ids: int = IDS, per_id: int = PER_ID, bench_pairs: int = BENCH_PAIRS,
          seed: int = 0):
    """Regenerate the leaderboard into `out`; returns the `Report`."""
    from fsbench.demo import run_comparison

    report = run_comparison(work, ids=ids, per_id=per_id, seed=seed, bench_pairs=bench_pairs, second_real=True,
                            report_dir=out, title=TITLE, sheets=False, samples=False, label="leaderboard")
    timings = {**report.timings, "ids": ids, "per_id": per_id, "bench_pairs": bench_pairs, "seed": seed}
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fsbench.leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("reports/leaderboard"), help="the published folder")
    parser.add_argument("--work", type=Path, default=Path("build/leaderboard"),
                        help="datasets, samples, FR models, evaluations (reused by the next run)")
    parser.add_argument("--ids", type=int, default=IDS, help="identities of every set")
    parser.add_argument("--per-id", type=int, default=PER_ID, help="images per identity")
    parser.add_argument("--bench-pairs", type=int, default=BENCH_PAIRS, help="pairs of each benchmark")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = build(args.out, args.work, ids=args.ids, per_id=args.per_id, bench_pairs=args.bench_pairs, seed=args.seed)
    print(f"wrote {report.markdown} and {report.html} in {report.timings['total'] / 60:.1f} min")


if __name__ == "__main__":
    main()

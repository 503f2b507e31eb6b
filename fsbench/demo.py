"""`fsbench demo`: the whole pipeline on the embedded face world, on CPU, in minutes.

Until a trained generator is at hand, the procedural world plays every part:

1. a "training world" (seed S) with held-out verification benchmarks, on which a `tiny`
   face-recognition model is trained: the embedder every identity metric is measured with.
   dlib's ResNet, the one pretrained face model available offline, barely separates the
   procedural identities (CST ~0.94, SEP ~1.0 on every set), so it cannot be the judge here;
2. a "real" set of new identities (seed S+1), the reference the synthetic sets are held to;
3. two "synthetic" sets sharing their identities (seed S+2): one with the world's default
   nuisance, one with the nuisance turned down, standing in for a generator that lacks
   intra-class diversity.

What the numbers should show: the FR model verifies the benchmarks well above chance, and
the low-diversity set has higher CST, a genuine-similarity IoU further from the real set and
a larger Fréchet distance. Every step resumes: running the demo again reuses what exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsbench import ui
from fsbench.data import FaceDataset
from fsbench.evaluate_run import run_evaluation
from fsbench.registry import get_registry
from fsbench.report.compare import Report, write_report

FEATURES = "pixels"  # the distribution metrics' feature space (named in the report)
IDENTITY_METRICS = "summary,cst,div,sep,uniqueness,consistency"
AGAINST_REAL = "iou,leakage,fd,kid,prdc"
BENCHMARKS = ("lfw_like", "cfp_fp_like", "agedb_like")
# A generator with little intra-class variation: near-frontal, evenly lit, sharp.
LOW_DIVERSITY = {"yaw_sd": 4.0, "profile_p": 0.0, "pitch_sd": 2.0, "roll_sd": 1.0, "blur_p": 0.0,
                 "glasses_p": 0.0, "hat_p": 0.0, "smile_p": 0.1, "open_mouth_p": 0.0}


def _make(out: Path, ids: int, per_id: int, seed: int, **options: Any) -> FaceDataset:
    if (out / "dataset.json").exists():
        return FaceDataset.open(out)  # a finished set from an earlier demo: reuse it
    return get_registry().generator("procedural").make(None, ids, per_id, out, seed, resume=True, **options)


def run_demo(
    out_dir: Path,
    ids: int = 40,
    per_id: int = 6,
    seed: int = 0,
    *,
    train_ids: int = 500,
    train_per_id: int = 8,
    bench_pairs: int = 1200,
    fr_overrides: dict[str, Any] | None = None,
) -> Report:
    from fsbench.train.fr import train_fr

    out_dir = Path(out_dir)
    ui.err.print(
        f"[bold]fsbench demo[/bold]: FR model on {train_ids} x {train_per_id} images, "
        f"then {ids} identities x {per_id} images per scored set, seed {seed} -> {out_dir}"
    )
    world = _make(out_dir / "data" / "train-world", train_ids, train_per_id, seed,
                  benchmark=True, bench_pairs=bench_pairs)
    ui.err.print("training the [bold]tiny[/bold] face-recognition model that scores every set")
    run = train_fr(world, out_dir / "fr", "tiny", fr_overrides)
    embedder = f"iresnet:{run.run_dir}"
    benches = [world.root / "benchmarks" / name / f"{name}.bin" for name in BENCHMARKS]

    real = _make(out_dir / "data" / "real", ids, per_id, seed + 1)
    sets = {
        "synthetic-default": _make(out_dir / "data" / "synthetic-default", ids, per_id, seed + 2),
        "synthetic-low-diversity": _make(out_dir / "data" / "synthetic-low-diversity", ids, per_id, seed + 2,
                                         **LOW_DIVERSITY),
    }
    from fsbench.report.contact_sheet import contact_sheet

    for name, ds in {"real": real, **sets}.items():
        contact_sheet(ds, out_dir / f"sheet-{name}.png", n_ids=6, per_id=min(per_id, 6))

    evaluations: dict[str, dict[str, Any]] = {
        "real": {"dataset_dir": real.root, "metric_specs": f"{IDENTITY_METRICS},verification", "benches": benches},
    }
    for name, ds in sets.items():
        evaluations[name] = {"dataset_dir": ds.root, "metric_specs": f"{IDENTITY_METRICS},{AGAINST_REAL}",
                             "reference_dir": real.root}
    runs = []
    for name, kwargs in evaluations.items():
        ui.err.print(f"scoring [bold]{name}[/bold]")
        result = run_evaluation(embedder=embedder, features=FEATURES, out_dir=out_dir / "eval" / name,
                                seed=seed, **kwargs)
        runs.append(result.out_dir)
    return write_report(runs, out_dir / "report",
                        title="fsbench demo: procedural world, scored by a tiny IResNet trained on it")

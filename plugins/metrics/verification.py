"""Face verification on benchmark pairs (LFW, CFP-FP, AgeDB-30...), as insightface measures it.

Three ways in, one protocol (`fsbench.verification`, the core's: other plugins use it too):

- ``fsbench verify --bench lfw.bin --embedder iresnet:backbone.pth`` on the command line;
- the ``verification`` metric of ``fsbench evaluate --bench a.bin --bench b.bin``;
- `fsbench.verification.verify_embedder(embedder, pairset)` from Python (FR training calls it
  after each run).

Preprocessing follows insightface's evaluation: images decoded to RGB; resized so the short
side is 112 (area interpolation, OpenCV INTER_AREA as MXNet's ``resize_short``) only when
the width is not 112; then the embedder resizes to its own input size. With flip TTA (the
default) an image's embedding is embed(image) + embed(mirrored image), L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

import fsbench
from fsbench.api import Metric, MetricResult
from fsbench.errors import UsageError
from fsbench.options import as_dict, opt, parse
from fsbench.verification import verify_embedder

if TYPE_CHECKING:  # pragma: no cover
    from fsbench.evaluation import EvalContext

__all__ = ["ROC_FILE", "VerificationMetric", "roc_points", "save_roc", "verify_cmd"]


class VerificationMetric(Metric):
    """Verification accuracy of the run's embedder on each ``--bench`` pair set.

    With an output folder (``evaluate --out``) it also writes ``verification_roc.csv``
    (bench, threshold, fpr, tpr; at most 200 points a benchmark), which ``fsbench report``
    draws as ROC curves."""

    name = "verification"
    description = "insightface 10-fold verification accuracy and TAR@FAR=1e-3 on --bench pairs"
    needs = frozenset({"benchmarks"})
    higher_is_better = True
    primary = "mean"

    @dataclass(frozen=True)
    class Options:
        flip: bool = opt(True, "add the mirrored image's embedding (insightface's flip TTA)")
        folds: int = opt(10, "unshuffled folds of the protocol", min=1)
        root: str | None = opt(None, "image folder for pairs.csv / LFW pairs.txt benchmarks")
        allow_outside_root: bool = opt(False, "let pairs files name images outside their root (../, absolute, symlinks)")
        batch_size: int | None = opt(None, "images per embedder call (none: the embedder's)", min=1)

    def __init__(self, option: str | None = None, **options: Any) -> None:
        o = parse(self.Options, options, where=f"metric {self.name!r}")
        super().__init__(option=option, **as_dict(o))
        self.flip, self.n_folds, self.batch_size = o.flip, o.folds, o.batch_size
        self.root = Path(o.root) if o.root else None
        self.allow_outside_root = o.allow_outside_root

    def compute(self, ctx: EvalContext) -> MetricResult:
        import pandas as pd

        from fsbench.data.pairs import open_pairs

        benchmarks = ctx.require("benchmarks", self.name)
        embedder = ctx.embedder()
        scalars: dict[str, float] = {}
        rows, notes, names, curves = [], [], set(), {}
        for path in benchmarks:
            pairset = open_pairs(path, self.root, allow_outside_root=self.allow_outside_root)
            name = pairset.name
            k = 2
            while name in names:  # two files with one stem: keep both apart
                name, k = f"{pairset.name}{k}", k + 1
            names.add(name)
            res = verify_embedder(embedder, pairset, flip=self.flip, n_folds=self.n_folds,
                                  batch_size=self.batch_size)
            scalars[f"{name}_acc"] = res.accuracy
            scalars[f"{name}_std"] = res.std
            scalars[f"{name}_tar@far1e-3"] = res.tar_at_far
            scalars[f"{name}_auc"] = res.auc
            rows.append({"bench": name, "path": str(path), "pairs": res.pairs, "folds": res.folds,
                         "accuracy": res.accuracy, "std": res.std, "tar@far1e-3": res.tar_at_far,
                         "far": res.far, "tar@far1e-4": res.tar_at_far_1e4, "auc": res.auc,
                         "threshold_mean": float(np.mean(res.thresholds))})
            notes.extend(f"{name}: {n}" for n in res.notes if not n.startswith(("flip", "no flip")))
            curves[name] = res
        notes.append("flip TTA: embed(x) + embed(mirror x)" if self.flip else "no flip TTA")
        scalars["mean"] = float(np.mean([r["accuracy"] for r in rows]))
        if ctx.out_dir is not None:
            save_roc(curves, Path(ctx.out_dir) / ROC_FILE)
        return MetricResult(self.name, scalars, per_item=pd.DataFrame(rows), notes=notes,
                            space=embedder.cache_key())


ROC_FILE = "verification_roc.csv"  # what `fsbench report` draws its ROC figure from
ROC_POINTS = 200  # at most, per benchmark


def roc_points(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray,
               max_points: int = ROC_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve of one benchmark, at most `max_points` of it: a point repeating the one
    before (thresholds below the closest pair, above the farthest) is dropped, then points
    are taken evenly along what is left, the first and last always kept."""
    fpr, tpr, thresholds = (np.asarray(a, dtype=np.float64) for a in (fpr, tpr, thresholds))
    keep = np.ones(len(fpr), dtype=bool)
    keep[1:] = (np.diff(fpr) != 0) | (np.diff(tpr) != 0)
    index = np.flatnonzero(keep)
    if len(index) > max_points:
        index = index[np.unique(np.linspace(0, len(index) - 1, max_points).round().astype(np.int64))]
    return fpr[index], tpr[index], thresholds[index]


def save_roc(curves: dict[str, Any], path: Path) -> Path:
    """`verification_roc.csv` with columns bench, threshold, fpr, tpr: per benchmark the mean
    over its folds of the test-fold FPR and TPR at each squared-distance threshold of the
    protocol's grid (`VerificationResult.fpr` / `.tpr`), thresholds ascending, at most
    `ROC_POINTS` rows. Written atomically (a temporary name, then a rename)."""
    import os

    import pandas as pd

    from fsbench.verification import ACC_THRESHOLDS

    frames = []
    for name, res in curves.items():
        fpr, tpr, thresholds = roc_points(res.fpr, res.tpr, ACC_THRESHOLDS[: len(res.fpr)])
        frames.append(pd.DataFrame({"bench": name, "threshold": thresholds.round(6), "fpr": fpr, "tpr": tpr}))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pd.concat(frames, ignore_index=True).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- command


@click.command("verify")
@click.option("--bench", "bench", type=click.Path(path_type=Path), help="An insightface .bin pack (lfw.bin, ...).")
@click.option("--pairs", "pairs_csv", type=click.Path(path_type=Path),
              help="A pairs.csv with columns path_a, path_b, same[, fold]; paths relative to --root.")
@click.option("--lfw-pairs", "lfw_pairs", type=click.Path(path_type=Path),
              help="LFW's pairs.txt; images at ROOT/name/name_0001.jpg.")
@click.option("--root", type=click.Path(path_type=Path), help="Image folder for --pairs / --lfw-pairs.")
@click.option("--allow-outside-root", is_flag=True,
              help="Let --pairs / --lfw-pairs name images outside --root (../, absolute paths, symlinks).")
@click.option("--embedder", "embedder_spec",
              help="NAME[:OPTION], e.g. iresnet:backbone.pth. Default: $FSBENCH_EMBEDDER, the user config, "
                   "else the judge for procedural-world benchmarks and dlib for others.")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Add the mirrored image's embedding.")
@click.option("--folds", default=10, show_default=True, help="Unshuffled folds of the protocol.")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Images per embedder call, at least 1 (default: the embedder's).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")
def verify_cmd(bench, pairs_csv, lfw_pairs, root, allow_outside_root, embedder_spec, flip, folds, batch_size,
               as_json) -> None:
    """Face-verification accuracy of an embedder on benchmark pairs (insightface's protocol).

    \b
    Squared distance of L2-normalised (flip-summed) embeddings, thresholds 0..4 step 0.01
    picked on the other folds and tested on each fold in turn; TAR at FAR=1e-3 as well.
    \b
    Examples:
      fsbench verify --bench lfw.bin --embedder iresnet:backbone.pth
      fsbench verify --pairs pairs.csv --root faces --embedder dlib --json
      fsbench verify --lfw-pairs pairs.txt --root lfw --embedder dlib:aligned
      fsbench verify --bench world/benchmarks/lfw_like/lfw_like.bin   # the default judge
    """
    from fsbench import ui
    from fsbench.data.pairs import read_bin_pairs, read_lfw_pairs, read_pairs_csv
    from fsbench.registry import get_registry

    given = [o for o, v in (("--bench", bench), ("--pairs", pairs_csv), ("--lfw-pairs", lfw_pairs)) if v]
    if len(given) != 1:
        raise UsageError("give exactly one of --bench FILE.bin, --pairs pairs.csv or --lfw-pairs pairs.txt"
                         + (f" (got {', '.join(given)})" if given else ""))
    if bench is not None:
        if root is not None:
            raise UsageError("--root is for --pairs / --lfw-pairs; a .bin pack holds its images")
        pairset = read_bin_pairs(bench)
    elif pairs_csv is not None:
        pairset = read_pairs_csv(pairs_csv, root, allow_outside_root=allow_outside_root)
    else:
        if root is None:
            raise UsageError("--lfw-pairs needs --root DIR, the folder holding name/name_0001.jpg")
        pairset = read_lfw_pairs(lfw_pairs, root, allow_outside_root=allow_outside_root)
    if folds < 1:
        raise UsageError(f"--folds must be at least 1, got {folds}")
    if embedder_spec is None:  # the default judge, from the benchmark's lineage
        from fsbench.judge import benchmark_info, default_embedder

        lineage = benchmark_info(bench or pairs_csv) or (benchmark_info(root) if root is not None else None)
        embedder_spec, reason = default_embedder(lineage)
    else:
        reason = "--embedder"
    embedder = get_registry().embedder(embedder_spec)
    judge = {"spec": embedder_spec, "name": embedder.name, "weights_id": embedder.weights_id(), "reason": reason}
    if not as_json or reason != "--embedder":
        ui.err.print(f"judge: {embedder_spec} (weights {judge['weights_id']}): {reason}",
                     soft_wrap=True, markup=False, highlight=False)
    res = verify_embedder(embedder, pairset, flip=flip, n_folds=folds, batch_size=batch_size)
    payload = {
        **res.to_json(),
        "bench": str(pairset.source),
        "name": pairset.name,
        "embedder": embedder_spec,
        "space": embedder.cache_key(),
        "judge": judge,
        "flip": flip,
    }
    table = ui.table(
        f"verification on {pairset.name} ({res.pairs} pairs, {res.folds} folds, {embedder_spec} {judge['weights_id']}"
        f"{', flip' if flip else ''})",
        ["accuracy", "std", "TAR@FAR=1e-3", "FAR", "TAR@FAR=1e-4", "AUC", "threshold (mean)"],
        [[res.accuracy, res.std, res.tar_at_far, res.far, res.tar_at_far_1e4, res.auc,
          float(np.mean(res.thresholds))]],
    )
    ui.emit(payload, as_json=as_json, table=table)
    if not as_json:
        for note in res.notes:
            ui.err.print(f"note: {note}", soft_wrap=True, markup=False)


# --------------------------------------------------------------------------- hooks


@fsbench.hookimpl
def fsbench_register_metrics():
    return [VerificationMetric]


@fsbench.hookimpl
def fsbench_register_commands(commands):
    commands.add(verify_cmd)

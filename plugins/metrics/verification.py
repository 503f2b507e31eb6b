"""Face verification on benchmark pairs (LFW, CFP-FP, AgeDB-30...), as insightface measures it.

Three ways in, one protocol (`_verification_core`):

- ``fsbench verify --bench lfw.bin --embedder iresnet:backbone.pth`` on the command line;
- the ``verification`` metric of ``fsbench evaluate --bench a.bin --bench b.bin``;
- `verify_embedder(embedder, pairset)` from Python (FR training calls it after each run).

Preprocessing follows insightface's evaluation: images decoded to RGB; resized so the short
side is 112 (area interpolation, OpenCV INTER_AREA as MXNet's ``resize_short``) only when
the width is not 112; then the embedder resizes to its own input size. With flip TTA (the
default) an image's embedding is embed(image) + embed(mirrored image), L2-normalised.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

import fsbench
from fsbench.api import Embedder, Metric, MetricResult
from fsbench.errors import MetricError, UsageError
from plugins.metrics._verification_core import VerificationResult, evaluate_pairs

if TYPE_CHECKING:  # pragma: no cover
    from fsbench.data.pairs import PairSet
    from fsbench.evaluation import EvalContext

__all__ = ["VerificationMetric", "embed_pairset", "prepare_image", "verify_embedder", "verify_cmd"]

EVAL_SIDE = 112  # insightface's evaluation image size


def prepare_image(image: np.ndarray, side: int = EVAL_SIDE) -> np.ndarray:
    """Short side to `side` with area interpolation, only when the width differs (as insightface)."""
    h, w = image.shape[:2]
    if w == side:
        return image
    import cv2

    # MXNet's resize_short: the short side becomes `side`, the other scales by integer division
    new_h, new_w = (side * h // w, side) if h > w else (side, side * w // h)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def _name(embedder: object) -> str:
    return getattr(embedder, "name", type(embedder).__name__)


def _embed_group(embedder: Embedder, images: np.ndarray, flip: bool) -> tuple[np.ndarray, int]:
    """(n, H, W, 3) one-size uint8 -> ((n, D) float32 summed over flips, failures)."""
    n = len(images)
    batch = np.concatenate([images, images[:, :, ::-1]]) if flip else images  # (2n or n, H, W, 3)
    out = np.asarray(embedder.embed(np.ascontiguousarray(batch)), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != len(batch):
        raise MetricError(f"embedder {_name(embedder)!r} returned shape {out.shape} for {len(batch)} images")
    failures = len(getattr(embedder, "failures", dict)())
    if flip:
        out = out[:n] + out[n:]
    return out, failures


def embed_pairset(embedder: Embedder, pairset: PairSet, flip: bool = True,
                  batch_size: int | None = None) -> tuple[np.ndarray, int]:
    """Embeddings (M, D) float32, L2-normalised, of the pair set's M distinct images, and the
    number of embedder calls' rows that held no real embedding (say, no face found)."""
    from sklearn.preprocessing import normalize

    from fsbench import ui

    batch_size = int(batch_size or getattr(embedder, "batch_size", 64))
    m = len(pairset.images)
    vectors: np.ndarray | None = None
    failures = 0
    with ui.progress() as bar:
        task = bar.add_task(f"verify {pairset.name} ({_name(embedder)})", total=m, rate="")
        for start in range(0, m, batch_size):
            idx = np.arange(start, min(start + batch_size, m))
            images = [prepare_image(pairset.load(int(i))) for i in idx]
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for j, im in enumerate(images):
                by_shape.setdefault(im.shape, []).append(j)
            for rows in by_shape.values():  # embedders take one size per call
                out, bad = _embed_group(embedder, np.stack([images[j] for j in rows]), flip)
                if vectors is None:
                    vectors = np.zeros((m, out.shape[1]), dtype=np.float32)
                vectors[idx[rows]] = out
                failures += bad
            bar.update(task, advance=len(idx))
    assert vectors is not None
    return normalize(vectors).astype(np.float32), failures


def verify_embedder(embedder: Embedder, pairset: PairSet, flip: bool = True, n_folds: int = 10,
                    batch_size: int | None = None, far_target: float = 1e-3) -> VerificationResult:
    """Embed a pair set's images with `embedder` and run the protocol on it.

    The one entry point for Python callers (FR training evaluates each trained model with
    it). `embedder` is an `Embedder` or anything with ``embed(uint8 NHWC) -> (N, D)``
    (``name``, ``batch_size`` and ``failures()`` are used when present). `pairset` comes from `fsbench.data.pairs.open_pairs`. Raises MetricError when the
    pairs cannot be split into `n_folds` folds.
    """
    vectors, failures = embed_pairset(embedder, pairset, flip=flip, batch_size=batch_size)
    result = evaluate_pairs(vectors[pairset.index_a], vectors[pairset.index_b], pairset.issame,
                            n_folds=n_folds, far_target=far_target, folds=pairset.folds)
    if pairset.folds is not None:
        result.notes.append(f"{pairset.source}: test folds taken from its 'fold' column ({result.folds} folds)")
    if failures:
        result.notes.append(f"{failures} embedder rows held no real embedding (e.g. no face found); "
                            "they were scored as the embedder returned them")
    result.notes.append("flip TTA: embed(x) + embed(mirror x)" if flip else "no flip TTA")
    return result


def _flag(value: object, option: str) -> bool:
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise UsageError(f"-o verification.{option}={value!r}: expected true or false")


class VerificationMetric(Metric):
    """Verification accuracy of the run's embedder on each ``--bench`` pair set."""

    name = "verification"
    description = "insightface 10-fold verification accuracy and TAR@FAR=1e-3 on --bench pairs"
    needs = frozenset({"benchmarks"})
    higher_is_better = True
    primary = "mean"

    def __init__(self, option: str | None = None, flip: object = True, folds: object = 10,
                 root: str | None = None, batch_size: object = None) -> None:
        super().__init__(option=option, flip=flip, folds=folds, root=root, batch_size=batch_size)
        self.flip = _flag(flip, "flip")
        try:
            self.n_folds = int(folds)
            self.batch_size = int(batch_size) if batch_size not in (None, "") else None
        except ValueError:
            raise UsageError("-o verification.folds / .batch_size must be integers") from None
        self.root = Path(root) if root else None

    def compute(self, ctx: EvalContext) -> MetricResult:
        import pandas as pd

        from fsbench.data.pairs import open_pairs

        benchmarks = ctx.require("benchmarks", self.name)
        embedder = ctx.embedder()
        scalars: dict[str, float] = {}
        rows, notes, names = [], [], set()
        for path in benchmarks:
            pairset = open_pairs(path, self.root)
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
        notes.append("flip TTA: embed(x) + embed(mirror x)" if self.flip else "no flip TTA")
        scalars["mean"] = float(np.mean([r["accuracy"] for r in rows]))
        return MetricResult(self.name, scalars, per_item=pd.DataFrame(rows), notes=notes,
                            space=embedder.cache_key())


# --------------------------------------------------------------------------- command


@click.command("verify")
@click.option("--bench", "bench", type=click.Path(path_type=Path), help="An insightface .bin pack (lfw.bin, ...).")
@click.option("--pairs", "pairs_csv", type=click.Path(path_type=Path),
              help="A pairs.csv with columns path_a, path_b, same[, fold]; paths relative to --root.")
@click.option("--lfw-pairs", "lfw_pairs", type=click.Path(path_type=Path),
              help="LFW's pairs.txt; images at ROOT/name/name_0001.jpg.")
@click.option("--root", type=click.Path(path_type=Path), help="Image folder for --pairs / --lfw-pairs.")
@click.option("--embedder", "embedder_spec", required=True, help="NAME[:OPTION], e.g. iresnet:backbone.pth.")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Add the mirrored image's embedding.")
@click.option("--folds", default=10, show_default=True, help="Unshuffled folds of the protocol.")
@click.option("--batch-size", default=None, type=int, help="Images per embedder call (default: the embedder's).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")
def verify_cmd(bench, pairs_csv, lfw_pairs, root, embedder_spec, flip, folds, batch_size, as_json) -> None:
    """Face-verification accuracy of an embedder on benchmark pairs (insightface's protocol).

    \b
    Squared distance of L2-normalised (flip-summed) embeddings, thresholds 0..4 step 0.01
    picked on the other folds and tested on each fold in turn; TAR at FAR=1e-3 as well.
    \b
    Examples:
      fsbench verify --bench lfw.bin --embedder iresnet:backbone.pth
      fsbench verify --pairs pairs.csv --root faces --embedder dlib --json
      fsbench verify --lfw-pairs pairs.txt --root lfw --embedder dlib:aligned
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
        pairset = read_pairs_csv(pairs_csv, root)
    else:
        if root is None:
            raise UsageError("--lfw-pairs needs --root DIR, the folder holding name/name_0001.jpg")
        pairset = read_lfw_pairs(lfw_pairs, root)
    if folds < 1:
        raise UsageError(f"--folds must be at least 1, got {folds}")
    embedder = get_registry().embedder(embedder_spec)
    res = verify_embedder(embedder, pairset, flip=flip, n_folds=folds, batch_size=batch_size)
    payload = {
        **res.to_json(),
        "bench": str(pairset.source),
        "name": pairset.name,
        "embedder": embedder_spec,
        "space": embedder.cache_key(),
        "flip": flip,
    }
    table = ui.table(
        f"verification on {pairset.name} ({res.pairs} pairs, {res.folds} folds, {embedder_spec}"
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
def fsbench_register_commands(cli):
    cli.add_command(verify_cmd)

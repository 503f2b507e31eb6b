"""Distribution metrics: `fid`, `fd`, `kid`, `prdc`, and the `fsbench fid` / `fsbench stats` commands.

They compare the distribution of the evaluated dataset with the reference in a feature
space, which any embedder can provide. The space is, in order: the metric's option
(``fd:dlib``, ``kid:inception:clean``), ``--features``, then the metric's default (the FID
Inception for fid, kid and prdc; the run's ``--embedder`` for fd). Every result names its
space (`MetricResult.space`): an FID without its feature space is not a number.

Options (``-o kid.subsets=50``): kid takes `subsets` (100), `subset_size` (1000) and `seed`
(the run's seed; torch-fidelity's default is 2020); prdc takes `k` (5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import click

import fsbench
from fsbench import ui
from fsbench.api import Embedder, Metric, MetricResult
from fsbench.errors import MetricError, UsageError
from fsbench.options import as_dict, opt, parse

INCEPTION = "inception"


def _notes(*notes: str | None) -> list[str]:
    return [n for n in notes if n]


@dataclass(frozen=True)
class NoOptions:
    """fid and fd take no -o options (their feature space is the ``:OPTION``)."""


class _DistributionMetric(Metric):
    """Shared option handling (the class's `Options` schema) and feature-space resolution."""

    needs: ClassVar[frozenset[str]] = frozenset({"reference", "images"})
    default_space: ClassVar[str | None] = INCEPTION
    Options: ClassVar[type] = NoOptions

    def __init__(self, option: str | None = None, **options: Any) -> None:
        self.opts: dict[str, Any] = as_dict(parse(self.Options, options, where=f"metric {self.name!r}"))
        super().__init__(**{key: self.opts[key] for key in options})  # what was given, converted
        self.option = option

    def feature_embedder(self, ctx) -> Embedder:
        ctx.require("reference", self.name)
        spec = self.option or ctx.features or self.default_space
        return ctx.embedder(spec)  # spec None: the run's --embedder


class FID(_DistributionMetric):
    name = "fid"
    description = "Fréchet distance of feature statistics (FID Inception unless --features says otherwise)"
    higher_is_better = False
    primary = "fid"

    def compute(self, ctx) -> MetricResult:
        from fsbench.plugins.metrics._distribution_features import context_stats, dropped_note, rank_note
        from fsbench.plugins.metrics._distribution_math import frechet_distance

        emb = self.feature_embedder(ctx)
        space = emb.cache_key()
        a = context_stats(ctx, "dataset", emb)
        b = context_stats(ctx, "reference", emb)
        # evaluate prints notes after the table; no separate warning.
        notes = _notes(
            dropped_note(a.dropped, a.n + a.dropped, "dataset"),
            dropped_note(b.dropped, b.n + b.dropped, "reference"),
            rank_note(a.n, emb.dim, "dataset"),
            rank_note(b.n, emb.dim, "reference"),
        )
        value = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
        return MetricResult(
            self.name,
            {self.primary: value, "n_dataset": a.n, "n_reference": b.n},
            notes=notes,
            space=space,
        )


class FD(FID):
    name = "fd"
    description = "Fréchet distance in any embedder's space: fd:dlib, fd:iresnet:PATH (default: --embedder)"
    primary = "fd"
    default_space = None


class KID(_DistributionMetric):
    name = "kid"
    description = "kernel inception distance (torch-fidelity: cubic kernel, 100 subsets of 1000)"
    higher_is_better = False
    primary = "mean"  # with "std": evaluate shows them as one "mean ± std" cell

    @dataclass(frozen=True)
    class Options:
        subsets: int = opt(100, "random subsets averaged", min=1)
        subset_size: int = opt(1000, "samples per subset (capped at the smaller set)", min=2)
        seed: int | None = opt(None, "subset draws (none: the run's --seed; torch-fidelity uses 2020)", min=0)

    def compute(self, ctx) -> MetricResult:
        from fsbench.plugins.metrics._distribution_features import context_features, dropped_note
        from fsbench.plugins.metrics._distribution_math import kid

        emb = self.feature_embedder(ctx)
        x, dx = context_features(ctx, "dataset", emb)
        y, dy = context_features(ctx, "reference", emb)
        want, subsets = self.opts["subset_size"], self.opts["subsets"]
        seed = ctx.seed if self.opts["seed"] is None else self.opts["seed"]
        try:
            est = kid(x, y, subsets=subsets, subset_size=want, seed=seed)
        except ValueError as exc:
            raise MetricError(f"{self.name}: {exc}") from None
        notes = _notes(dropped_note(dx, len(x) + dx, "dataset"), dropped_note(dy, len(y) + dy, "reference"))
        if est.subset_size < want:
            notes.append(
                f"subset size capped at {est.subset_size} (the smaller set; torch-fidelity requires {want}): "
                "not comparable with published KIDs"
            )
        if len(x) == len(y) == est.subset_size:  # kid() then returns one estimate, std NaN
            notes.append(f"subsets = whole set (n={est.subset_size}), no spread: one MMD^2 estimate, std undefined")
        return MetricResult(
            self.name,
            {"mean": est.mean, "std": est.std, "subset_size": est.subset_size, "n_subsets": est.subsets,
             "n_dataset": len(x), "n_reference": len(y)},
            notes=notes,
            space=emb.cache_key(),
        )


class PRDC(_DistributionMetric):
    name = "prdc"
    description = "precision/recall (Kynkäänniemi 2019) and density/coverage (Naeem 2020), k = 5"
    higher_is_better = True
    primary = "precision"
    also_shown = ("recall", "density", "coverage")  # four numbers: one would hide mode dropping

    @dataclass(frozen=True)
    class Options:
        k: int = opt(5, "nearest neighbours of the manifold estimate", min=1)

    def compute(self, ctx) -> MetricResult:
        from fsbench.plugins.metrics._distribution_features import context_features, dropped_note
        from fsbench.plugins.metrics._distribution_math import prdc

        emb = self.feature_embedder(ctx)
        fake, df = context_features(ctx, "dataset", emb)
        real, dr = context_features(ctx, "reference", emb)
        k = self.opts["k"]
        try:
            scores = prdc(real, fake, k=k)
        except ValueError as exc:
            raise MetricError(f"{self.name}: {exc}") from None
        return MetricResult(
            self.name,
            {**scores, "k": k, "n_dataset": len(fake), "n_reference": len(real)},
            notes=_notes(dropped_note(df, len(fake) + df, "dataset"), dropped_note(dr, len(real) + dr, "reference")),
            space=emb.cache_key(),
        )


@fsbench.hookimpl
def fsbench_register_metrics() -> list[type[Metric]]:
    return [FID, FD, KID, PRDC]


# --------------------------------------------------------------------------- commands


def _make_embedder(features: str, inception: Path | None) -> Embedder:
    from fsbench.registry import get_registry

    emb = get_registry().embedder(features)
    if inception is not None:
        if emb.name != INCEPTION:
            ui.warn(f"--inception is ignored: the feature space is {features!r}")
        elif getattr(emb, "weights_path", None) is None:
            emb.weights_path = Path(inception)
    return emb


def _side_stats(path: Path, emb_factory, workers: int | None):
    """A folder (featurised now) or an .npz (loaded) -> FeatureStats."""
    from fsbench.plugins.metrics._distribution_features import FeatureStats, dataset_stats

    path = Path(path)
    if path.is_file():
        return FeatureStats.load(path)
    if path.is_dir():
        return dataset_stats(path, emb_factory(), workers)
    raise UsageError(f"{path}: neither a dataset folder nor a statistics .npz file")


@click.command("fid")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--features", default=None, metavar="SPEC",
              help="Feature space: an embedder spec (default inception; e.g. dlib, inception:clean).")
@click.option("--inception", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth); or set FSBENCH_INCEPTION.")
@click.option("--workers", type=click.IntRange(0, 256), default=None,
              help="Image decoding processes (0 to 256; 0 decodes in this process).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")
def fid_cmd(a: Path, b: Path, features: str | None, inception: Path | None, workers: int | None, as_json: bool) -> None:
    """Fréchet distance between A and B, each a dataset folder or a statistics .npz.

    .npz files in pytorch-fid's layout (mu, sigma) are accepted; those written by
    `fsbench stats` also record their feature space, and a mismatch is refused.

    \b
    Examples:
      fsbench fid samples/ real/ --inception pt_inception-2015-12-05-6726825d.pth
      fsbench fid samples/ ref.npz --features dlib
    """
    from fsbench.plugins.metrics._distribution_features import check_space, dropped_note, rank_note
    from fsbench.plugins.metrics._distribution_math import frechet_distance

    for path in (a, b):  # refuse a wrong path before featurising the other side
        if not (path.is_file() or path.is_dir()):
            raise UsageError(f"{path}: neither a dataset folder nor a statistics .npz file")
    spec = features or INCEPTION
    made: list[Embedder] = []

    def factory() -> Embedder:
        if not made:
            made.append(_make_embedder(spec, inception))
        return made[0]

    sa = _side_stats(a, factory, workers)
    sb = _side_stats(b, factory, workers)
    # The space asked for: known once an embedder exists (a folder was featurised, or
    # --features was given); otherwise the two files must agree with each other.
    if made or features:
        wanted = factory().cache_key()
        notes = []
        for path, s in ((a, sa), (b, sb)):
            check_space(s.space, wanted, str(path))
            if s.space is None:
                notes.append(f"{path}: no feature space recorded (a pytorch-fid file?); assumed to be {wanted}")
    else:
        if sa.space is not None and sb.space is not None:
            check_space(sb.space, sa.space, str(b))
        wanted = sa.space or sb.space
        notes = []
        if sa.space is None or sb.space is None:
            notes.append("a statistics file records no feature space (a pytorch-fid file?); assumed to match the other")
    if sa.mu.shape != sb.mu.shape:
        raise UsageError(f"{a} has {sa.mu.size}-d statistics but {b} has {sb.mu.size}-d: not the same feature space")
    for path, s in ((a, sa), (b, sb)):
        notes += _notes(
            dropped_note(s.dropped, s.n + s.dropped, str(path)),
            rank_note(s.n, s.mu.size, str(path)) if s.n >= 0 else None,
        )
    for note in notes:
        ui.warn(note)
    value = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    result = {
        "fid": value,
        "space": wanted,
        "a": {"path": str(a), "n": sa.n if sa.n >= 0 else None},
        "b": {"path": str(b), "n": sb.n if sb.n >= 0 else None},
        "notes": notes,
    }
    rows = [["fid", value], ["space", wanted or "unrecorded"], [f"n {a}", result["a"]["n"]], [f"n {b}", result["b"]["n"]]]
    ui.emit(result, as_json=as_json, table=ui.table("Fréchet distance", ["", "value"], rows))


@click.command("stats")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="The .npz file to write.")
@click.option("--features", default=INCEPTION, show_default=True, metavar="SPEC", help="Feature space (embedder spec).")
@click.option("--inception", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth); or set FSBENCH_INCEPTION.")
@click.option("--workers", type=click.IntRange(0, 256), default=None,
              help="Image decoding processes (0 to 256; 0 decodes in this process).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")
def stats_cmd(root: Path, out: Path, features: str, inception: Path | None, workers: int | None, as_json: bool) -> None:
    """Precompute the feature statistics of a dataset folder (pytorch-fid's npz: mu, sigma).

    The file also records the sample count and the feature space, so `fsbench fid`
    refuses to compare it with statistics from another space.

    \b
    Examples:
      fsbench stats real/ --out real-inception.npz --inception pt_inception-2015-12-05-6726825d.pth
      fsbench stats world --out world-pixels.npz --features pixels:8    # raw 8x8 pixels: no weights needed
      fsbench fid samples/ world-pixels.npz --features pixels:8
    """
    from fsbench.data import FaceDataset
    from fsbench.plugins.metrics._distribution_features import dataset_stats, dropped_note, rank_note

    if not Path(root).is_dir():
        raise UsageError(f"{root}: no such dataset folder")
    emb = _make_embedder(features, inception)
    stats = dataset_stats(root, emb, workers)
    fingerprint = FaceDataset.open(root).fingerprint()
    stats.save(out, fingerprint=fingerprint)
    notes = _notes(dropped_note(stats.dropped, stats.n + stats.dropped, str(root)),
                   rank_note(stats.n, stats.mu.size, str(root)))
    for note in notes:
        ui.warn(note)
    result = {"out": str(out), "n": stats.n, "dim": int(stats.mu.size), "space": stats.space,
              "fingerprint": fingerprint, "notes": notes}
    rows = [[k, v] for k, v in result.items() if k != "notes"]
    ui.emit(result, as_json=as_json, table=ui.table(f"statistics of {root}", ["", "value"], rows))


@fsbench.hookimpl
def fsbench_register_commands(commands) -> None:
    commands.add(fid_cmd)
    commands.add(stats_cmd)

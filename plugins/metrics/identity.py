"""Identity metrics of a face dataset in a face embedder's space.

VIGFace (Section 5.2) scores a synthetic dataset by intra-class consistency (`cst`), the
diversity of image quality within a class (`div`) and inter-class separability (`sep`), and
compares similarity distributions with a real set (`iou`, Table 1). DCFace adds `uniqueness`
and `consistency`. `leakage` (in none of the papers) measures how close each synthetic
identity comes to a real training identity: the privacy claim of virtual identities, made a
number. Exact definitions: REFERENCE.md; the array maths lives in `_identity_math`.

Options come as ``-o NAME.KEY=VALUE``, e.g. ``-o iou.bins=50``, ``-o leakage.fmr=1e-4``,
``-o div.m=100``: each metric declares them in its `Options` schema, and `fsbench.options`
converts the strings, checks the ranges and refuses unknown keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

import fsbench
from fsbench.api import Embeddings, Metric, MetricResult
from fsbench.errors import MetricError, UsageError
from fsbench.options import as_dict, opt, parse

from . import _identity_math as im

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from fsbench.evaluation import EvalContext


# --------------------------------------------------------------------------- shared helpers


@dataclass(frozen=True)
class NoOptions:
    """The schema of a metric without options: any -o key is refused."""


_BLOCK_MB = "memory per similarity block, MiB (bounds peak memory, not the result)"


class _IdentityMetric(Metric):
    """Options parsed by the metric's `Options` schema; `opts` holds them as a plain dict."""

    Options: ClassVar[type] = NoOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        option = options.pop("option", None)
        if option not in (None, ""):
            raise UsageError(f"metric {self.name!r} takes no ':{option}' option (use -o {self.name}.KEY=VALUE)")
        self.opts: dict[str, Any] = as_dict(parse(self.Options, options, where=f"metric {self.name!r}"))


def _embeddings(ctx: EvalContext, which: str = "dataset") -> Embeddings:
    emb = ctx.embeddings(which)
    if len(emb) == 0:
        raise MetricError(f"the {which} set has no embeddings (every image failed: see the embedder's failures)")
    im.check_finite(emb.vectors, which)
    return emb


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and population std (ddof 0) over the finite entries; NaN when there are none."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std())


def _frame(emb: Embeddings, counts: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
    """One row per identity that has at least one embedding."""
    import pandas as pd

    present = np.flatnonzero(counts > 0)
    data: dict[str, Any] = {
        "identity": [emb.identities[k] for k in present],
        "n_images": counts[present],
    }
    data.update({name: np.asarray(col)[present] for name, col in columns.items()})
    return pd.DataFrame(data)


# --------------------------------------------------------------------------- VIGFace


class Consistency(_IdentityMetric):
    """CST (VIGFace Eq. 10): mean cosine over all ordered pairs of a class, diagonal included."""

    name = "cst"
    description = "intra-class consistency, VIGFace Eq. 10 (mean pairwise cosine incl. diagonal)"
    higher_is_better = True

    def compute(self, ctx: EvalContext) -> MetricResult:
        emb = _embeddings(ctx)
        n_classes = len(emb.identities)
        cst, counts = im.cst_per_class(emb.vectors, emb.labels, n_classes)
        return cst_result(emb, cst, counts)


def cst_result(emb: Embeddings, cst: np.ndarray, counts: np.ndarray) -> MetricResult:
    excluded = int(((counts > 0) & (counts < 2)).sum())
    included = int((counts >= 2).sum())
    mean, std = _mean_std(cst)
    notes = []
    if excluded:
        notes.append(f"{excluded} identities with fewer than 2 images excluded (CST needs >= 2)")
    if included == 0:
        notes.append("CST undefined: no identity has 2 or more images")
    return MetricResult(
        "cst",
        {"mean": mean, "std": std, "n_identities": included, "n_excluded": excluded},
        per_item=_frame(emb, counts, cst=cst),
        notes=notes,
        space=emb.space,
    )


class Separability(_IdentityMetric):
    """SEP (VIGFace Eq. 13-14): per class, mean over its images of CCS / NNCCS."""

    name = "sep"
    description = "inter-class separability, VIGFace Eq. 13-14 (CCS / nearest other centre)"
    higher_is_better = True

    @dataclass(frozen=True)
    class Options:
        block_mb: int = opt(64, _BLOCK_MB, min=1)

    def compute(self, ctx: EvalContext) -> MetricResult:
        emb = _embeddings(ctx)
        n_classes = len(emb.identities)
        counts = im.class_counts(emb.labels, n_classes)
        if int((counts > 0).sum()) < 2:
            raise MetricError(
                f"SEP needs >= 2 identities; the dataset has {int((counts > 0).sum())} with embeddings"
            )
        ccs, nnccs, _ = im.sep_per_item(
            emb.vectors, emb.labels, n_classes, block_bytes=self.opts["block_mb"] * 2**20
        )
        return sep_result(emb, ccs, nnccs, counts)


def sep_result(emb: Embeddings, ccs: np.ndarray, nnccs: np.ndarray, counts: np.ndarray) -> MetricResult:
    n_classes = len(counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ccs / nnccs
    sep = im.per_class_mean(ratio, emb.labels, n_classes)
    mean, std = _mean_std(sep)
    notes = []
    nonpos = int((nnccs <= 0).sum())
    if nonpos:
        notes.append(
            f"{nonpos} images have a nearest other centre at cosine <= 0, where CCS/NNCCS is "
            "not a meaningful ratio (reported as computed, per Eq. 13)"
        )
    return MetricResult(
        "sep",
        {
            "mean": mean,
            "std": std,
            "n_identities": int((counts > 0).sum()),
            "ccs_mean": float(ccs.mean()),
            "nnccs_mean": float(nnccs.mean()),
        },
        per_item=_frame(
            emb,
            counts,
            sep=sep,
            ccs=im.per_class_mean(ccs, emb.labels, n_classes),
            nnccs=im.per_class_mean(nnccs, emb.labels, n_classes),
        ),
        notes=notes,
        space=emb.space,
    )


class Diversity(_IdentityMetric):
    """DIV (VIGFace Eq. 11-12): population variance of SER-FIQ scores within each class."""

    name = "div"
    description = "intra-class diversity, VIGFace Eq. 11-12 (variance of SER-FIQ scores)"
    needs = frozenset({"embeddings", "images"})
    higher_is_better = True

    @dataclass(frozen=True)
    class Options:
        m: int = opt(100, "stochastic forward passes per image (SER-FIQ)", min=2)
        p: float = opt(0.5, "dropout probability of the passes", min=0, max=1, min_exclusive=True, max_exclusive=True)
        batch_size: int = opt(32, "images per embedder call", min=1)

    def compute(self, ctx: EvalContext) -> MetricResult:
        embedder = ctx.embedder()
        if not callable(getattr(embedder, "serfiq", None)):
            raise MetricError(
                f"div needs SER-FIQ (stochastic dropout passes), which embedder {embedder.name!r} "
                "cannot do; use a torch IResNet, e.g. --embedder iresnet:r50:/path/backbone.pth"
            )
        m, p, seed = self.opts["m"], self.opts["p"], int(ctx.seed)
        key = f"serfiq-{embedder.cache_key()}-m{m}-p{p:g}-seed{seed}"

        def run() -> dict[str, np.ndarray]:
            qs, labels = [], []
            for batch in ctx.batches("dataset", batch_size=self.opts["batch_size"]):
                qs.append(embedder.serfiq(batch.images, m=m, p=p, seed=seed, ids=np.asarray(batch.index)))
                labels.append(np.asarray(batch.labels))
            return {
                "q": np.concatenate(qs).astype(np.float64) if qs else np.empty(0),
                "labels": np.concatenate(labels).astype(np.int64) if labels else np.empty(0, np.int64),
            }

        arrays = ctx.cached(key, "dataset", run)
        q, labels = arrays["q"], arrays["labels"]
        n_classes = len(ctx.dataset.identities)
        if not np.isfinite(q).all():
            raise MetricError(f"{int((~np.isfinite(q)).sum())} SER-FIQ scores are NaN or inf")
        return div_result(ctx.dataset.identities, q, labels, n_classes, m=m, p=p, space=embedder.cache_key())


def div_result(
    identities, q: np.ndarray, labels: np.ndarray, n_classes: int, *, m: int, p: float, space: str | None
) -> MetricResult:
    import pandas as pd

    counts = im.class_counts(labels, n_classes)
    div = im.per_class_var(q, labels, n_classes)
    div[counts < 2] = np.nan
    excluded = int(((counts > 0) & (counts < 2)).sum())
    mean, std = _mean_std(div)
    present = np.flatnonzero(counts > 0)
    frame = pd.DataFrame(
        {
            "identity": [identities[k] for k in present],
            "n_images": counts[present],
            "div": div[present],
            "serfiq_mean": im.per_class_mean(q, labels, n_classes)[present],
        }
    )
    notes = [f"SER-FIQ: m={m} dropout passes at p={p}, raw q = 2/(1+exp(mean pairwise distance)), no sigmoid rescaling"]
    if excluded:
        notes.append(f"{excluded} identities with fewer than 2 images excluded (variance of one score is 0)")
    return MetricResult(
        "div",
        {
            "mean": mean,
            "std": std,
            "n_identities": int((counts >= 2).sum()),
            "n_excluded": excluded,
            "serfiq_mean": float(q.mean()) if len(q) else math.nan,
        },
        per_item=frame,
        notes=notes,
        space=space,
    )


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


class SimilarityIoU(_IdentityMetric):
    """VIGFace Table 1: IoU of genuine (and imposter) cosine histograms, dataset vs reference."""

    name = "iou"
    description = "IoU of genuine/imposter similarity histograms vs a reference set (VIGFace Tab. 1)"
    needs = frozenset({"embeddings", "reference"})
    higher_is_better = True

    @dataclass(frozen=True)
    class Options:
        bins: int = opt(100, "histogram bins over cosine [-1, 1]", min=1)
        max_pairs: int = opt(2_000_000, "imposter pairs sampled at most", min=1)

    def compute(self, ctx: EvalContext) -> MetricResult:
        ctx.require("reference", self.name)
        syn, ref = _embeddings(ctx, "dataset"), _embeddings(ctx, "reference")
        bins, cap = self.opts["bins"], self.opts["max_pairs"]
        result, hists = iou_result(syn, ref, bins=bins, max_pairs=cap, seed=int(ctx.seed))
        if ctx.out_dir is not None:
            from fsbench.report.figures import plot_similarity_histograms

            path = plot_similarity_histograms(hists, Path(ctx.out_dir) / "iou_similarity_histograms.png")
            result.figures["similarity_histograms"] = path
            save_histograms(hists, Path(ctx.out_dir) / "iou_histograms.csv")
        return result


def save_histograms(hists: dict[str, np.ndarray], path: Path) -> Path:
    """The histograms behind the IoU (share of pairs per bin), for `fsbench report`'s figures:
    columns bin_low, bin_high, dataset_genuine, reference_genuine, dataset_imposter, reference_imposter."""
    import os

    import pandas as pd

    edges = hists["edges"]
    frame = pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:],
                          **{key: values for key, values in hists.items() if key != "edges"}})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def iou_result(
    syn: Embeddings, ref: Embeddings, *, bins: int, max_pairs: int, seed: int
) -> tuple[MetricResult, dict[str, np.ndarray]]:
    notes: list[str] = []
    samples = {}
    for which, emb in (("dataset", syn), ("reference", ref)):
        n_classes = len(emb.identities)
        samples[which, "genuine"] = im.genuine_similarities(
            emb.vectors, emb.labels, n_classes, max_pairs=max_pairs, seed=seed
        )
        samples[which, "imposter"] = im.imposter_similarities(
            emb.vectors, emb.labels, n_classes, max_pairs=max_pairs, seed=seed + 1
        )
    for (which, kind), s in samples.items():
        if s.sampled:
            notes.append(f"{kind} pairs of the {which}: {len(s.sims):,} sampled (seed {seed}) of {s.total:,}")
        if s.total == 0:
            notes.append(f"the {which} has no {kind} pairs: that IoU is undefined")
    g_iou, g_syn, g_ref = im.histogram_iou(samples["dataset", "genuine"].sims, samples["reference", "genuine"].sims, bins)
    i_iou, i_syn, i_ref = im.histogram_iou(
        samples["dataset", "imposter"].sims, samples["reference", "imposter"].sims, bins
    )
    counts = im.class_counts(syn.labels, len(syn.identities))
    sums = im.class_sums(syn.vectors, syn.labels, len(counts))
    with np.errstate(divide="ignore", invalid="ignore"):
        # mean over i < j of f_i . f_j = (||sum f||^2 - N) / (N (N - 1)) for unit rows
        genuine_mean = ((sums * sums).sum(1) - counts) / (counts * (counts - 1))
    genuine_mean[counts < 2] = np.nan
    result = MetricResult(
        "iou",
        {
            "mean": (g_iou + i_iou) / 2,  # NaN when either is undefined
            "genuine": g_iou,
            "imposter": i_iou,
            "bins": bins,
            "genuine_pairs": len(samples["dataset", "genuine"].sims),
            "imposter_pairs": len(samples["dataset", "imposter"].sims),
            # where the histograms sit: Table 1's guidance sweep moves the genuine mean up with w
            "genuine_similarity": _mean(samples["dataset", "genuine"].sims),
            "imposter_similarity": _mean(samples["dataset", "imposter"].sims),
            "reference_genuine_similarity": _mean(samples["reference", "genuine"].sims),
            "reference_genuine_pairs": len(samples["reference", "genuine"].sims),
            "reference_imposter_pairs": len(samples["reference", "imposter"].sims),
        },
        per_item=_frame(syn, counts, genuine_mean=genuine_mean),
        notes=notes,
        space=syn.space,
    )
    hists = {
        "edges": np.linspace(-1.0, 1.0, bins + 1),
        "dataset_genuine": g_syn,
        "reference_genuine": g_ref,
        "dataset_imposter": i_syn,
        "reference_imposter": i_ref,
    }
    return result, hists


# --------------------------------------------------------------------------- privacy


class Leakage(_IdentityMetric):
    """Per synthetic identity, the closest reference identity centre, and the share of
    synthetic identities that would verify as a reference person at FMR = `fmr`."""

    name = "leakage"
    description = "closest reference identity per synthetic identity; share above the FMR=1e-3 threshold"
    needs = frozenset({"embeddings", "reference"})
    higher_is_better = False
    primary = "share"

    @dataclass(frozen=True)
    class Options:
        fmr: float = opt(1e-3, "false match rate of the threshold, on reference imposter pairs",
                         min=0, max=1, min_exclusive=True, max_exclusive=True)
        max_pairs: int = opt(2_000_000, "reference imposter pairs sampled at most", min=1)
        block_mb: int = opt(64, _BLOCK_MB, min=1)

    def compute(self, ctx: EvalContext) -> MetricResult:
        ctx.require("reference", self.name)
        syn, ref = _embeddings(ctx, "dataset"), _embeddings(ctx, "reference")
        fmr = self.opts["fmr"]
        return leakage_result(
            syn,
            ref,
            fmr=fmr,
            max_pairs=self.opts["max_pairs"],
            seed=int(ctx.seed),
            block_bytes=self.opts["block_mb"] * 2**20,
        )


def leakage_result(
    syn: Embeddings, ref: Embeddings, *, fmr: float, max_pairs: int, seed: int, block_bytes: int = im.DEFAULT_BLOCK_BYTES
) -> MetricResult:
    n_ref = len(ref.identities)
    ref_counts = im.class_counts(ref.labels, n_ref)
    if int((ref_counts > 0).sum()) < 2:
        raise MetricError("leakage needs a reference set with >= 2 identities (for its imposter threshold)")
    imposter = im.imposter_similarities(ref.vectors, ref.labels, n_ref, max_pairs=max_pairs, seed=seed)
    threshold = im.threshold_at_fmr(imposter.sims, fmr)
    notes = [f"threshold {threshold:.4f} = cosine at FMR={fmr:g} over {len(imposter.sims):,} reference imposter pairs"]
    if imposter.sampled:
        notes.append(f"reference imposter pairs sampled: {len(imposter.sims):,} of {imposter.total:,} (seed {seed})")
    if len(imposter.sims) * fmr < 1:
        notes.append(
            f"only {len(imposter.sims):,} reference imposter pairs: FMR={fmr:g} is not resolved, "
            "the threshold is the highest imposter similarity"
        )
    n_syn = len(syn.identities)
    counts = im.class_counts(syn.labels, n_syn)
    syn_centres = im.class_centres(syn.vectors, syn.labels, n_syn)
    ref_centres = im.class_centres(ref.vectors, ref.labels, n_ref)
    best, arg = im.nearest_centre(syn_centres, ref_centres, valid=ref_counts > 0, block_bytes=block_bytes)
    best = best.astype(np.float64)
    leaked = best > threshold
    present = counts > 0
    mean, std = _mean_std(np.where(present, best, np.nan))
    nearest = np.array([ref.identities[a] if a >= 0 else "" for a in arg], dtype=object)
    return MetricResult(
        "leakage",
        {
            "mean": mean,
            "std": std,
            "share": float(leaked[present].mean()),
            "n_leaked": int(leaked[present].sum()),
            "threshold": threshold,
            "fmr": fmr,
            "n_identities": int(present.sum()),
            "n_reference_identities": int((ref_counts > 0).sum()),
        },
        per_item=_frame(syn, counts, max_similarity=best, nearest_reference=nearest, leaked=leaked),
        notes=notes,
        space=syn.space,
    )


class SourceMatch(_IdentityMetric):
    """For generators that augment real identities (VIGFace with -o ids=real): the share of
    images whose nearest reference identity centre is the identity they were made from (the
    manifest's `source_identity`). Chance is 1 / reference identities."""

    name = "source_match"
    description = "share of images nearest their source identity's reference centre (real-identity samples)"
    needs = frozenset({"embeddings", "reference"})
    higher_is_better = True
    primary = "share"

    @dataclass(frozen=True)
    class Options:
        block_mb: int = opt(64, _BLOCK_MB, min=1)

    def compute(self, ctx: EvalContext) -> MetricResult:
        ctx.require("reference", self.name)
        syn, ref = _embeddings(ctx, "dataset"), _embeddings(ctx, "reference")
        manifest = ctx.dataset.manifest
        if manifest is None or "source_identity" not in manifest.columns:
            raise MetricError("the dataset's manifest has no source_identity column (sample real identities)")
        source = manifest["source_identity"].to_numpy(dtype=object)[syn.index]
        ref_index = {name: k for k, name in enumerate(ref.identities)}
        missing = sorted({str(s) for s in source if s not in ref_index})
        if missing:
            raise MetricError(f"{len(missing)} source identities are not in the reference, e.g. {missing[0]!r}")
        n_ref = len(ref.identities)
        centres = im.class_centres(ref.vectors, ref.labels, n_ref)
        _, nearest = im.nearest_centre(syn.vectors, centres, valid=im.class_counts(ref.labels, n_ref) > 0,
                                       block_bytes=self.opts["block_mb"] * 2**20)
        hit = nearest == np.array([ref_index[s] for s in source])
        n_syn = len(syn.identities)
        per_class = np.bincount(syn.labels, weights=hit, minlength=n_syn) / np.maximum(
            im.class_counts(syn.labels, n_syn), 1)
        return MetricResult(self.name, {"share": float(hit.mean()), "chance": 1.0 / n_ref, "n_images": int(len(hit)),
                                        "n_reference_identities": n_ref},
                            per_item=_frame(syn, im.class_counts(syn.labels, n_syn), share=per_class), space=syn.space)


# --------------------------------------------------------------------------- DCFace


class Uniqueness(_IdentityMetric):
    """DCFace uniqueness: share of class centres whose nearest other centre is below `threshold`."""

    name = "uniqueness"
    description = "DCFace uniqueness: share of identity centres with no other centre at cosine >= threshold"
    higher_is_better = True

    @dataclass(frozen=True)
    class Options:
        threshold: float = opt(0.3, "cosine at or above which two identity centres are one", min=-1, max=1)
        block_mb: int = opt(64, _BLOCK_MB, min=1)

    def compute(self, ctx: EvalContext) -> MetricResult:
        emb = _embeddings(ctx)
        return uniqueness_result(
            emb, threshold=self.opts["threshold"], block_bytes=self.opts["block_mb"] * 2**20
        )


def uniqueness_result(emb: Embeddings, *, threshold: float, block_bytes: int = im.DEFAULT_BLOCK_BYTES) -> MetricResult:
    n_classes = len(emb.identities)
    counts = im.class_counts(emb.labels, n_classes)
    present = counts > 0
    if int(present.sum()) < 2:
        raise MetricError(f"uniqueness needs >= 2 identities; the dataset has {int(present.sum())} with embeddings")
    centres = im.class_centres(emb.vectors, emb.labels, n_classes)
    best, arg = im.nearest_centre(
        centres, centres, np.arange(n_classes), valid=present, block_bytes=block_bytes
    )
    best = best.astype(np.float64)
    unique = (best < threshold).astype(np.float64)
    mean, std = _mean_std(np.where(present, unique, np.nan))
    nearest = np.array([emb.identities[a] if a >= 0 else "" for a in arg], dtype=object)
    return MetricResult(
        "uniqueness",
        {
            "mean": mean,
            "std": std,
            "n_unique": int(unique[present].sum()),
            "n_identities": int(present.sum()),
            "threshold": threshold,
            "nearest_mean": float(best[present].mean()),
        },
        per_item=_frame(emb, counts, nearest_similarity=best, nearest_identity=nearest, unique=unique.astype(bool)),
        notes=[f"an identity is unique when no other identity centre is at cosine >= {threshold:g}"],
        space=emb.space,
    )


class CentreConsistency(_IdentityMetric):
    """DCFace consistency: share of a class's images at cosine >= `threshold` from its centre."""

    name = "consistency"
    description = "DCFace consistency: share of images within cosine threshold of their identity centre"
    higher_is_better = True

    @dataclass(frozen=True)
    class Options:
        threshold: float = opt(0.3, "cosine to the identity centre at or above which an image is consistent",
                               min=-1, max=1)

    def compute(self, ctx: EvalContext) -> MetricResult:
        return consistency_result(_embeddings(ctx), threshold=self.opts["threshold"])


def consistency_result(emb: Embeddings, *, threshold: float) -> MetricResult:
    n_classes = len(emb.identities)
    counts = im.class_counts(emb.labels, n_classes)
    centres = im.class_centres(emb.vectors, emb.labels, n_classes)
    sims = np.einsum("nd,nd->n", emb.vectors.astype(np.float32), centres[emb.labels]).astype(np.float64)
    ok = (sims >= threshold).astype(np.float64)
    share = im.per_class_mean(ok, emb.labels, n_classes)
    mean, std = _mean_std(share)
    return MetricResult(
        "consistency",
        {
            "mean": mean,
            "std": std,
            "share_images": float(ok.mean()),
            "n_identities": int((counts > 0).sum()),
            "threshold": threshold,
        },
        per_item=_frame(emb, counts, consistency=share, centre_similarity=im.per_class_mean(sims, emb.labels, n_classes)),
        notes=[
            f"share of images at cosine >= {threshold:g} from their identity centre (centre includes the image); "
            "mean/std over identities, share_images over all images"
        ],
        space=emb.space,
    )


@fsbench.hookimpl
def fsbench_register_metrics() -> list[type[Metric]]:
    return [Consistency, Separability, Diversity, SimilarityIoU, Leakage, Uniqueness, CentreConsistency, SourceMatch]

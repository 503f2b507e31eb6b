"""The figures of a comparison report, each written as PNG and SVG.

One function per figure, each drawing from what the evaluation folders hold:

- ``samples-ROW``: a sample grid per dataset (identities in rows, labelled), when the
  evaluation's recorded dataset folder is still there with the same content;
- ``cst_sep``: VIGFace's Fig. 8 (normalised CST vs SEP, circle area ~ DIV, one colour per
  dataset, the reference set starred, bootstrap intervals as error bars), one per feature space;
- ``similarity-ROW``: genuine/imposter similarity histograms of a dataset against its
  reference (the ``iou_histograms.csv`` the iou metric saves), titled with dataset, judge, IoU;
- ``distribution``: FID/FD/KID/PRDC bars (KID with its std over subsets);
- ``roc``: ROC curves of verification runs, from ``verification_roc.csv`` (bench, fpr, tpr).

A figure whose data is absent is not drawn; `Drawn.skipped` says why, and the report prints it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fsbench.errors import FsbenchError
from fsbench.report.figures import cst_sep_figure, new_figure, save_figure, similarity_histogram_figure
from fsbench.report.headline import arrow

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from fsbench.report.compare import Results

__all__ = ["Drawn", "FigureFile", "write_figures"]

GRID_IDS = 6  # identities (rows) of a sample grid
GRID_PER_ID = 6  # images per identity (columns)
FINGERPRINT_MAX_IMAGES = 20_000  # re-hash a dataset folder to check it only up to this size
HISTOGRAMS = "iou_histograms.csv"  # written by the iou metric beside metrics.json
ROC = "verification_roc.csv"  # bench, fpr, tpr


@dataclass(frozen=True)
class FigureFile:
    kind: str  # "samples", "cst_sep", "similarity", "distribution", "roc"
    title: str
    caption: str
    png: Path
    svg: Path


@dataclass
class Drawn:
    figures: list[FigureFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per figure not drawn, saying why


def write_figures(results: Results, out_dir: Path, *, samples: bool = True) -> Drawn:
    """Every figure the evaluations have data for, into `out_dir`; the others as notes.
    `samples=False` leaves out the sample grids (the largest files, for a report kept small)."""
    drawn = Drawn()
    names: set[str] = set()

    def stem(name: str) -> Path:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "figure"
        unique, k = base, 2
        while unique in names:
            unique, k = f"{base}-{k}", k + 1
        names.add(unique)
        return Path(out_dir) / unique

    for draw in ((_sample_grids,) if samples else ()) + (_cst_sep, _similarity, _distribution, _roc):
        draw(results, drawn, stem)
    return drawn


def _add(drawn: Drawn, kind: str, fig, path: Path, title: str, caption: str) -> None:
    png, svg = save_figure(fig, path)
    drawn.figures.append(FigureFile(kind, title, caption, png, svg))


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


# --------------------------------------------------------------------------- sample grids


def _dataset_folder(results: Results, row: str) -> tuple[Path | None, str]:
    """The folder of the dataset a row evaluated, or None and why not."""
    recorded = ((results.provenance.get(row) or {}).get("dataset") or {}).get("root")
    if not recorded:
        return None, "the evaluation records no dataset folder"
    root = Path(recorded)
    folder = results.folders[row]
    # a relative root is relative to where `evaluate` ran: here, or beside the evaluation folder
    for candidate in ([root] if root.is_absolute() else [root, folder.parent / root, folder / root]):
        if candidate.is_dir():
            return candidate, ""
    return None, f"its dataset folder {recorded} is not there"


def _sample_grids(results: Results, drawn: Drawn, stem) -> None:
    from fsbench.data import FaceDataset
    from fsbench.report.contact_sheet import sheet_array

    for row in results.frame.index:
        root, why = _dataset_folder(results, row)
        if root is None:
            drawn.skipped.append(f"sample grid of {row}: {why}")
            continue
        try:
            ds = FaceDataset.open(root)
            evaluated = results.fingerprint(row)
            if evaluated and len(ds) <= FINGERPRINT_MAX_IMAGES and not ds.matches_fingerprint(evaluated):
                drawn.skipped.append(f"sample grid of {row}: {root} changed since the evaluation "
                                     f"(fingerprint {ds.fingerprint()}, evaluated {evaluated})")
                continue
            n_ids = min(GRID_IDS, len(ds.identities))
            per_id = int(min(GRID_PER_ID, max(1, np.max(ds.counts()[:n_ids], initial=1))))  # no empty grey columns
            sheet, ids = sheet_array(ds, n_ids=n_ids, per_id=per_id)
        except (FsbenchError, OSError, ValueError) as exc:
            drawn.skipped.append(f"sample grid of {row}: {root} unreadable ({exc})")
            continue
        h = sheet.shape[0] // max(len(ids), 1)
        fig = new_figure(1.0 + 0.85 * per_id, 0.5 + 0.85 * len(ids))
        ax = fig.add_subplot()
        ax.imshow(sheet, interpolation="nearest")
        ax.set_yticks([(k + 0.5) * h for k in range(len(ids))], ids, fontsize=7)
        ax.set_xticks([])
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        title = f"{row}: first {len(ids)} identities x {per_id} images"
        ax.set_title(title, fontsize=9)
        _add(drawn, "samples", fig, stem(f"samples-{row}"), title,
             f"Samples of {row} ({root}): one identity per row, its first images along the row.")


# --------------------------------------------------------------------------- VIGFace Fig. 8


def _interval(frame: pd.DataFrame, column: str, row: str) -> tuple[float, float]:
    low, high = frame.get(f"{column}.ci_low"), frame.get(f"{column}.ci_high")
    if low is None or high is None:
        return math.nan, math.nan
    return float(low[row]), float(high[row])


def _cst_sep(results: Results, drawn: Drawn, stem) -> None:
    import pandas as pd

    frame = results.frame
    csts = results.groups_of("cst")
    if not csts or not results.groups_of("sep"):
        drawn.skipped.append("CST vs SEP (VIGFace Fig. 8): needs cst and sep in the evaluations")
        return
    references = set(results.reference_rows())
    for gc in csts:
        space = results.groups[gc]["space"]
        same = [g for g in results.groups_of("sep") if results.groups[g]["space"] == space]
        if not same:
            drawn.skipped.append(f"CST vs SEP: {gc} has no sep in the same feature space ({space})")
            continue
        gs = same[0]
        gd = next((g for g in results.groups_of("div") if results.groups[g]["space"] == space), None)
        rows = [r for r in frame.index
                if np.isfinite(frame.at[r, f"{gc}.mean"]) and np.isfinite(frame.at[r, f"{gs}.mean"])]
        if len(rows) < 2:
            drawn.skipped.append(f"CST vs SEP ({space}): needs two datasets with cst and sep, found {len(rows)}")
            continue
        data = pd.DataFrame({
            "dataset": rows,
            "cst": [frame.at[r, f"{gc}.mean"] for r in rows],
            "sep": [frame.at[r, f"{gs}.mean"] for r in rows],
            "div": [frame.at[r, f"{gd}.mean"] if gd else math.nan for r in rows],
            "cst_low": [_interval(frame, f"{gc}.mean", r)[0] for r in rows],
            "cst_high": [_interval(frame, f"{gc}.mean", r)[1] for r in rows],
            "sep_low": [_interval(frame, f"{gs}.mean", r)[0] for r in rows],
            "sep_high": [_interval(frame, f"{gs}.mean", r)[1] for r in rows],
            "reference": [r in references for r in rows],
        })
        title = f"CST vs SEP (VIGFace Fig. 8), {space or 'no space recorded'}"
        many = len(csts) > 1
        refs = [r for r in rows if r in references]
        caption = ("CST divided by the largest CST shown; circle area proportional to DIV"
                   + ("" if gd else " (not measured: dashed circles)")
                   + ("; error bars: " + results.bootstrap.describe() if results.bootstrap else "")
                   + (f"; starred: the reference set ({', '.join(refs)})" if refs else "") + ".")
        _add(drawn, "cst_sep", cst_sep_figure(data, title), stem(f"cst_sep-{space}" if many else "cst_sep"),
             title, caption)


# --------------------------------------------------------------------------- similarity histograms


def _read_histograms(path: Path) -> dict[str, np.ndarray]:
    import pandas as pd

    table = pd.read_csv(path)
    edges = np.append(table["bin_low"].to_numpy(float), table["bin_high"].to_numpy(float)[-1:])
    hists = {"edges": edges}
    for key in ("reference_genuine", "reference_imposter", "dataset_genuine", "dataset_imposter"):
        if key in table.columns:
            hists[key] = table[key].to_numpy(float)
    return hists


def _shown(frame: pd.DataFrame, row: str, column: str) -> str:
    v = frame.at[row, column] if column in frame.columns else math.nan
    return f"{v:.3f}" if np.isfinite(v) else "-"


def _similarity(results: Results, drawn: Drawn, stem) -> None:
    frame = results.frame
    ious = results.groups_of("iou")
    if not ious:
        drawn.skipped.append("similarity histograms: no iou in the evaluations (needs --reference and --metrics iou)")
        return
    for row in frame.index:
        group = next((g for g in ious if any(_finite(frame.at[row, f"{g}.{k}"]) for k in ("mean", "genuine", "imposter")
                                             if f"{g}.{k}" in frame.columns)), None)
        if group is None:
            continue
        path = results.folders[row] / HISTOGRAMS
        if not path.exists():
            drawn.skipped.append(f"similarity histograms of {row}: {path} is missing (evaluated by an fsbench "
                                 "that did not save them: run evaluate again)")
            continue
        try:
            hists = _read_histograms(path)
        except (OSError, ValueError, KeyError, IndexError) as exc:
            drawn.skipped.append(f"similarity histograms of {row}: {path} unreadable ({exc})")
            continue

        iou = {k: _shown(frame, row, f"{group}.{k}") for k in ("mean", "genuine", "imposter")}
        reference = results.reference_name(row) or "reference"
        title = (f"{row} vs {reference}; judge: {results.judge(row)}\n"
                 f"IoU {iou['mean']} (genuine {iou['genuine']}, imposter {iou['imposter']})")
        caption = (f"Cosine similarities of genuine (same identity) and imposter pairs of {row} (lines) and of "
                   f"its reference {reference} (filled), as shares of pairs per bin; the IoU of VIGFace Table 1.")
        _add(drawn, "similarity", similarity_histogram_figure(hists, title), stem(f"similarity-{row}"), title, caption)


# --------------------------------------------------------------------------- FID / KID / PRDC


_DISTRIBUTION = ("fid", "fd", "kid", "prdc")


def _distribution(results: Results, drawn: Drawn, stem) -> None:
    frame = results.frame
    groups = [g for g, info in results.groups.items() if info["metric"].partition(":")[0] in _DISTRIBUTION]
    panels = []
    for g in groups:
        base = results.groups[g]["metric"].partition(":")[0]
        scalars = {"fid": ["fid"], "fd": ["fd"], "kid": ["mean"], "prdc": ["precision", "recall", "density", "coverage"]}
        keys = [k for k in scalars[base] if f"{g}.{k}" in frame.columns]
        rows = [r for r in frame.index if any(np.isfinite(frame.at[r, f"{g}.{k}"]) for k in keys)]
        if keys and rows:
            panels.append((g, base, keys, rows))
    if not panels:
        drawn.skipped.append("FID/KID/PRDC bars: no fid, fd, kid or prdc results in the evaluations")
        return
    fig = new_figure(3.4 * len(panels), 3.6)
    for i, (g, base, keys, rows) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        width = 0.8 / len(keys)
        for j, key in enumerate(keys):
            x = np.arange(len(rows)) + (j - (len(keys) - 1) / 2) * width
            y = np.array([frame.at[r, f"{g}.{key}"] for r in rows], dtype=float)
            err = None
            if base == "kid" and f"{g}.std" in frame.columns:
                err = np.nan_to_num(np.array([frame.at[r, f"{g}.std"] for r in rows], dtype=float))
            ax.bar(x, np.nan_to_num(y), width=width, yerr=err, capsize=3, label=key if len(keys) > 1 else None,
                   color=f"C{j}")
        ax.set_xticks(np.arange(len(rows)), rows, rotation=30, ha="right", fontsize=7)
        space = results.groups[g]["space"]
        ax.set_title(f"{g} {arrow(base)}".strip() + (f"\n{space}" if space else ""), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        if len(keys) > 1:
            ax.legend(fontsize=6)
        ax.grid(True, axis="y", alpha=0.3)
    title = "Distribution metrics vs the reference"
    caption = ("Each panel one metric in its feature space (named above it); KID's bars are ± its std over "
               "subsets; FID/FD are single estimates.")
    _add(drawn, "distribution", fig, stem("distribution"), title, caption)


# --------------------------------------------------------------------------- ROC


def _roc(results: Results, drawn: Drawn, stem) -> None:
    import pandas as pd

    verified = [r for r in results.frame.index
                if any(_finite(results.frame.at[r, f"{g}.mean"]) for g in results.groups_of("verification")
                       if f"{g}.mean" in results.frame.columns)]
    curves = []
    missing = []
    for row in verified:
        path = results.folders[row] / ROC
        if not path.exists():
            missing.append(row)
            continue
        try:
            table = pd.read_csv(path)
            for bench, part in table.groupby("bench", sort=False):
                order = np.argsort(part["fpr"].to_numpy(float), kind="stable")
                curves.append((f"{row}: {bench}", part["fpr"].to_numpy(float)[order], part["tpr"].to_numpy(float)[order]))
        except (OSError, ValueError, KeyError) as exc:
            drawn.skipped.append(f"ROC curves of {row}: {path} unreadable ({exc})")
    if missing:
        drawn.skipped.append(f"ROC curves of {', '.join(missing)}: verification accuracies but no ROC points "
                             f"({ROC} with columns bench, fpr, tpr: the folder was evaluated by an fsbench "
                             "that did not save them; evaluate again)")
    if not verified:
        drawn.skipped.append("ROC curves: no verification results in the evaluations (evaluate --bench)")
    if not curves:
        return
    fig = new_figure(5.0, 4.4)
    ax = fig.add_subplot()
    for i, (label, fpr, tpr) in enumerate(curves):
        ax.plot(fpr, tpr, color=f"C{i % 10}", label=label, linewidth=1.3)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    title = "ROC of verification"
    _add(drawn, "roc", fig, stem("roc"), title, "Mean over the protocol's folds of the test-fold TPR per threshold.")

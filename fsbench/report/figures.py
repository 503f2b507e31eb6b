"""Figures of identity metrics: VIGFace's Fig. 8 and the similarity histograms of Table 1.

Drawn with matplotlib's Agg backend (no display needed) and written atomically: to a
temporary name in the target folder, then renamed, so a reader never sees half a PNG. The
file gets the permissions an ordinary write would (0644 under the usual umask), not the
0600 of the temporary file. SVGs keep their text as text (searchable, smaller).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["cst_sep_figure", "new_figure", "plot_cst_sep", "plot_similarity_histograms", "save_figure",
           "similarity_histogram_figure"]


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib Figure of `width` x `height` inches at 120 dpi, outside pyplot."""
    # The object API needs no pyplot state and no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _save(fig: Figure, out: Path) -> Path:
    import matplotlib

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix, dir=out.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the figure is for everyone to read
        with os.fdopen(fd, "wb") as fh, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "fsbench"}):
            fig.savefig(fh, format=out.suffix.lstrip(".") or "png", bbox_inches="tight")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def save_figure(fig: Figure, stem: Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """`fig` as STEM.png and STEM.svg (each written atomically); the paths in `formats` order."""
    return [_save(fig, Path(stem).with_name(f"{Path(stem).name}.{fmt}")) for fmt in formats]


def plot_cst_sep(frame: pd.DataFrame, out: Path) -> Path:
    """VIGFace Fig. 8 as one PNG (see `cst_sep_figure`)."""
    return _save(cst_sep_figure(frame), out)


def cst_sep_figure(frame: pd.DataFrame, title: str | None = None) -> Figure:
    """VIGFace Fig. 8: normalised CST (x) vs SEP (y), one circle per dataset, area ~ DIV.

    `frame` has one row per dataset with columns dataset, cst, sep, div (div may be NaN when
    no SER-FIQ embedder was used: those circles are drawn dashed at a fixed size). The paper
    does not say how CST is normalised; we divide by the largest CST of the datasets shown, so
    the most consistent dataset sits at 1. A circle's area is proportional to its DIV.

    Optional columns: cst_low/cst_high and sep_low/sep_high (an interval: error bars, CST's
    normalised like the CST), and reference (bool: the real set, drawn with a star and named
    "(reference)" in the legend). Each dataset gets its own colour.
    """
    from matplotlib.lines import Line2D

    missing = {"dataset", "cst", "sep", "div"} - set(frame.columns)
    if missing:
        raise ValueError(f"plot_cst_sep: frame lacks column(s) {', '.join(sorted(missing))}")
    cst = frame["cst"].to_numpy(dtype=float)
    sep = frame["sep"].to_numpy(dtype=float)
    div = frame["div"].to_numpy(dtype=float)
    top = np.nanmax(np.abs(cst)) if np.isfinite(cst).any() else 1.0
    scale = top if top > 0 else 1.0
    x = cst / scale
    finite = np.isfinite(div) & (div >= 0)
    biggest = float(np.max(div[finite])) if finite.any() else 0.0
    sizes = np.where(finite, 1400.0 * np.where(finite, div, 0.0) / (biggest or 1.0), 200.0)
    reference = frame["reference"].to_numpy(dtype=bool) if "reference" in frame.columns else np.zeros(len(frame), bool)

    def bars(low: str, high: str, centre: np.ndarray, by: float = 1.0) -> np.ndarray | None:
        if not {low, high} <= set(frame.columns):
            return None
        lo = frame[low].to_numpy(dtype=float) / by
        hi = frame[high].to_numpy(dtype=float) / by
        return np.nan_to_num(np.stack([centre - lo, hi - centre]).clip(min=0.0), nan=0.0)

    xerr, yerr = bars("cst_low", "cst_high", x, scale), bars("sep_low", "sep_high", sep)
    colours = [f"C{i % 10}" for i in range(len(frame))]
    fig = new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    handles = []
    for i, name in enumerate(frame["dataset"].astype(str)):
        if not (np.isfinite(x[i]) and np.isfinite(sep[i])):
            continue
        dashed = not finite[i]
        if dashed:  # no DIV: an outline of a fixed size, not an area that means something
            ax.scatter([x[i]], [sep[i]], s=[sizes[i]], facecolors="none", edgecolors=colours[i], linewidths=1.2,
                       linestyle="--", zorder=2)
        else:
            ax.scatter([x[i]], [sep[i]], s=[sizes[i]], color=colours[i], alpha=0.35, edgecolors=colours[i],
                       linewidths=1.2, zorder=2)
        if xerr is not None or yerr is not None:
            ax.errorbar([x[i]], [sep[i]], xerr=None if xerr is None else xerr[:, i:i + 1],
                        yerr=None if yerr is None else yerr[:, i:i + 1], fmt="none", ecolor=colours[i],
                        elinewidth=1.2, capsize=3, zorder=3)
        ax.scatter([x[i]], [sep[i]], s=110 if reference[i] else 12, marker="*" if reference[i] else "o",
                   color=colours[i], edgecolors="black" if reference[i] else colours[i], linewidths=0.8, zorder=4)
        ax.annotate(name, (x[i], sep[i]), xytext=(6, 6), textcoords="offset points", fontsize=8, zorder=5)
        label = f"{name} (reference)" if reference[i] else name
        if dashed:
            label += ", DIV not measured"
        handles.append(Line2D([], [], marker="*" if reference[i] else "o", linestyle="", color=colours[i],
                              markeredgecolor="black" if reference[i] else colours[i], markersize=10 if reference[i] else 8,
                              label=label))
    ax.set_xlabel("normalised intra-class consistency (CST / max CST)")
    ax.set_ylabel("inter-class separability (SEP)")
    area = f"circle area ~ DIV (largest: {biggest:.3g})" if biggest > 0 else "circle area ~ DIV"
    bars_note = "; bars: confidence intervals" if xerr is not None or yerr is not None else ""
    ax.set_title(title or "CST vs SEP", fontsize=10)
    ax.text(0.0, -0.16, area + bars_note, transform=ax.transAxes, fontsize=7, va="top")
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)
    ax.grid(True, alpha=0.3)
    ax.margins(0.25)
    return fig


def plot_similarity_histograms(hists: dict[str, np.ndarray], out: Path, title: str | None = None) -> Path:
    """Genuine and imposter cosine histograms of a dataset against its reference (VIGFace Fig. 5)."""
    return _save(similarity_histogram_figure(hists, title), out)


def similarity_histogram_figure(hists: dict[str, np.ndarray], title: str | None = None) -> Figure:
    """The histograms of `hists` (edges + up to four shares-of-pairs arrays): the reference's
    filled, the dataset's as outlines, so the overlap the IoU measures is visible."""
    edges = np.asarray(hists["edges"], dtype=float)
    fig = new_figure(6.4, 3.9)
    ax = fig.add_subplot()
    styles = {
        "reference_genuine": ("tab:blue", "reference genuine", True),
        "reference_imposter": ("tab:gray", "reference imposter", True),
        "dataset_genuine": ("tab:orange", "dataset genuine", False),
        "dataset_imposter": ("tab:green", "dataset imposter", False),
    }
    for key, (colour, label, filled) in styles.items():
        if key in hists:
            values = np.asarray(hists[key], dtype=float)
            if filled:
                ax.stairs(values, edges, fill=True, alpha=0.3, color=colour, label=label)
            else:
                ax.stairs(values, edges, color=colour, linewidth=1.6, label=label)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("share of pairs")
    ax.set_xlim(-1, 1)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return fig

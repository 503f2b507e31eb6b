"""Figures of identity metrics: VIGFace's Fig. 8 and the similarity histograms of Table 1.

Drawn with matplotlib's Agg backend (no display needed) and written atomically: to a
temporary name in the target folder, then renamed, so a reader never sees half a PNG.
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

__all__ = ["plot_cst_sep", "plot_similarity_histograms"]


def _figure(width: float, height: float) -> Figure:
    # The object API needs no pyplot state and no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix, dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=out.suffix.lstrip(".") or "png", bbox_inches="tight")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def plot_cst_sep(frame: pd.DataFrame, out: Path) -> Path:
    """VIGFace Fig. 8: normalised CST (x) vs SEP (y), one circle per dataset, area ~ DIV.

    `frame` has one row per dataset with columns dataset, cst, sep, div (div may be NaN when
    no SER-FIQ embedder was used: those circles get the smallest size). The paper does not
    say how CST is normalised; we divide by the largest CST of the datasets shown, so the
    most consistent dataset sits at 1.
    """
    missing = {"dataset", "cst", "sep", "div"} - set(frame.columns)
    if missing:
        raise ValueError(f"plot_cst_sep: frame lacks column(s) {', '.join(sorted(missing))}")
    cst = frame["cst"].to_numpy(dtype=float)
    sep = frame["sep"].to_numpy(dtype=float)
    div = frame["div"].to_numpy(dtype=float)
    top = np.nanmax(np.abs(cst)) if np.isfinite(cst).any() else 1.0
    x = cst / (top if top > 0 else 1.0)
    finite = np.isfinite(div)
    if finite.any() and np.nanmax(div[finite]) > 0:
        sizes = 80 + 1500 * np.where(finite, div, 0.0) / np.nanmax(div[finite])
    else:
        sizes = np.full(len(div), 200.0)
    fig = _figure(5.5, 4.5)
    ax = fig.add_subplot()
    ax.scatter(x, sep, s=sizes, alpha=0.45, edgecolors="black", linewidths=0.8)
    for xi, yi, name in zip(x, sep, frame["dataset"].astype(str)):
        ax.annotate(name, (xi, yi), ha="center", va="center", fontsize=8)
    ax.set_xlabel("normalised intra-class consistency (CST / max CST)")
    ax.set_ylabel("inter-class separability (SEP)")
    ax.set_title("CST vs SEP (circle area ~ DIV)")
    ax.grid(True, alpha=0.3)
    ax.margins(0.2)
    return _save(fig, out)


def plot_similarity_histograms(hists: dict[str, np.ndarray], out: Path) -> Path:
    """Genuine and imposter cosine histograms of a dataset against its reference (VIGFace Fig. 5)."""
    edges = hists["edges"]
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    styles = {
        "reference_genuine": ("tab:blue", "reference genuine"),
        "reference_imposter": ("tab:gray", "reference imposter"),
        "dataset_genuine": ("tab:orange", "dataset genuine"),
        "dataset_imposter": ("tab:green", "dataset imposter"),
    }
    for key, (colour, label) in styles.items():
        if key in hists:
            ax.bar(centres, hists[key], width=width, alpha=0.4, color=colour, label=label)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("share of pairs")
    ax.set_xlim(-1, 1)
    ax.legend(fontsize=8)
    return _save(fig, out)

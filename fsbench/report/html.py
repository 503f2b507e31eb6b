"""The comparison report as one self-contained HTML page.

Everything is inside the file: the styles inline, every figure a ``data:image/png;base64``
URI, no script, no font, no link to fetch. It opens from a file, mailed or archived, with no
server, and shows the same as the day it was written.
"""

from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from fsbench.report.bootstrap import Bootstrap
    from fsbench.report.compare import SummaryTable
    from fsbench.report.plots import FigureFile

__all__ = ["render"]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #888; }
tr.reference td:first-child { font-weight: bold; }
.wide { overflow-x: auto; }
figure { display: inline-block; margin: 0.5em 1em 1.5em 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; max-width: 40em; }
.note { color: #555; font-size: 0.9em; }
code { font-size: 0.9em; }
"""


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _number(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    v = float(v)
    return f"{v:.6g}"


def _summary(table: SummaryTable, references: set[str]) -> list[str]:
    out = ['<div class="wide"><table class="summary">', "<thead><tr><th>dataset</th>"]
    out += [f"<th>{escape(h)} {a}</th>".replace(" </th>", "</th>") for h, a in zip(table.headers, table.arrows)]
    out.append("</tr></thead><tbody>")
    for name, cells in table.rows:
        cls = ' class="reference"' if name in references else ""
        label = escape(name) + (" (reference)" if name in references else "")
        tds = "".join(f'<td title="{escape(c.text())}">{escape(c.interval_text())}</td>' for c in cells)
        out.append(f"<tr{cls}><td>{label}</td>{tds}</tr>")
    out.append("</tbody></table></div>")
    return out


def _all_numbers(frame: pd.DataFrame) -> list[str]:
    """Every column of the frame, one table row each (datasets across): the CSV, readable."""
    out = ['<details><summary>every scalar (the columns of results.csv)</summary><div class="wide"><table>',
           "<thead><tr><th>column</th>" + "".join(f"<th>{escape(str(r))}</th>" for r in frame.index) + "</tr></thead>",
           "<tbody>"]
    for column in frame.columns:
        out.append(f"<tr><td>{escape(str(column))}</td>"
                   + "".join(f"<td>{_number(frame.at[r, column])}</td>" for r in frame.index) + "</tr>")
    out.append("</tbody></table></div></details>")
    return out


def _provenance(provenance: dict[str, Any], judges: dict[str, str]) -> list[str]:
    out = ["<table><thead><tr><th>dataset</th><th>fsbench</th><th>commit</th><th>seed</th><th>judge</th>"
           "<th>dataset fingerprint</th><th>reference fingerprint</th><th>created</th></tr></thead><tbody>"]
    for row, prov in provenance.items():
        cells = [prov.get("fsbench_version"), prov.get("git_commit"), prov.get("seed"), judges.get(row),
                 (prov.get("dataset") or {}).get("fingerprint"), (prov.get("reference") or {}).get("fingerprint"),
                 prov.get("created")]
        out.append(f"<tr><td>{escape(str(row))}</td>"
                   + "".join(f"<td>{escape('-' if c is None else str(c))}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return out


def render(title: str, table: SummaryTable, *, frame: pd.DataFrame, spaces: dict[str, str],
           settings: dict[str, str], bootstrap: Bootstrap | None, figures: list[FigureFile], skipped: list[str],
           provenance: dict[str, Any], references: list[str], judges: dict[str, str]) -> str:
    """The page. `table` holds the headline cells (with intervals where bootstrapped)."""
    refs = set(references)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>", f"<h1>{escape(title)}</h1>"]
    if table.rows:
        parts += _summary(table, refs)
    interval = (f"intervals: {escape(bootstrap.describe())} (the interval of the mean; hover a cell for mean ± std)"
                if bootstrap else "no intervals")
    parts.append(f'<p class="note">↑ higher is better, ↓ lower is better; values as <code>fsbench evaluate</code> '
                 f"prints them, with [low, high] {interval}.</p>")
    by_space: dict[str, list[str]] = {}
    for group, space in spaces.items():
        by_space.setdefault(space, []).append(group)
    if by_space:
        parts.append("<h2>Feature spaces</h2><ul>")
        parts += [f"<li><code>{escape(space)}</code>: {escape(', '.join(names))}</li>" for space, names in by_space.items()]
        parts.append("</ul>")
    if any(settings.values()):
        parts.append("<h2>Settings</h2><ul>")
        parts += [f"<li>{escape(g)}: {escape(s)}</li>" for g, s in settings.items() if s]
        parts.append("</ul>")
    if figures or skipped:
        parts.append("<h2>Figures</h2>")
    for fig in figures:
        parts.append(f'<figure><img src="{_png_uri(fig.png)}" alt="{escape(" ".join(fig.title.split()))}">'
                     f"<figcaption>{escape(fig.caption)} (<code>{escape(fig.png.name)}</code>, "
                     f"<code>{escape(fig.svg.name)}</code>)</figcaption></figure>")
    if skipped:
        parts.append('<p class="note">Not drawn:</p><ul class="note">')
        parts += [f"<li>{escape(s)}</li>" for s in skipped]
        parts.append("</ul>")
    if len(frame.columns) and len(frame.index):
        parts.append("<h2>All numbers</h2>")
        parts += _all_numbers(frame)
    if provenance:
        parts.append("<h2>Provenance</h2>")
        parts += _provenance(provenance, judges)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

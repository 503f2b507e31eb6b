"""The headline table as LaTeX that drops into a paper: booktabs rules, escaped names.

Needs ``\\usepackage{booktabs}`` in the preamble and nothing else. A cell is the number
`evaluate` shows, with its bootstrap interval as ``0.6758 [0.6512, 0.7001]`` where there is
one, else ``$0.6758 \\pm 0.079$`` (mean ± std over identities, folds or KID subsets); numbers as
every fsbench table writes them (`fsbench.ui.format_number`), ``2.81e-4`` as
``$2.81\\times10^{-4}$``, a missing one as ``--``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from fsbench.report.bootstrap import Bootstrap
    from fsbench.report.compare import SummaryTable
    from fsbench.report.headline import Headline

__all__ = ["escape", "render"]

_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
_ARROWS = {"↑": r"$\uparrow$", "↓": r"$\downarrow$", "": ""}


def escape(text: str) -> str:
    """`text` as LaTeX text: the ten special characters (and <, >, |) made literal."""
    out = "".join(_ESCAPES.get(ch, ch) for ch in str(text))
    return "{}" + out if out.startswith("[") else out  # "\\ [" would read as \\'s optional argument


def _missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _number(v: float) -> str:
    """Math-mode body of a number as the other tables write it (`fsbench.ui.format_number`):
    0.6758, or 2.81\\times10^{-4} for 2.81e-4."""
    from fsbench.ui import format_number

    text = format_number(v)
    mantissa, e, exponent = text.partition("e")
    return rf"{mantissa}\times10^{{{int(exponent)}}}" if e else text


def cell(h: Headline) -> str:
    if _missing(h.value):
        return "--"
    if h.has_interval():
        return f"${_number(h.value)}$ [${_number(h.low)}$, ${_number(h.high)}$]"
    if not _missing(h.std):
        return rf"${_number(h.value)} \pm {_number(h.std)}$"
    return f"${_number(h.value)}$"


def render(table: SummaryTable, *, title: str, bootstrap: Bootstrap | None, references: list[str],
           label: str = "tab:fsbench") -> str:
    """A ``table`` environment: one row per dataset, one column per headline scalar."""
    refs = set(references)
    n = len(table.headers)
    header = " & ".join(["Dataset"] + [f"{escape(h)} {_ARROWS.get(a, '')}".rstrip() for h, a in
                                       zip(table.headers, table.arrows)])
    how = (f"[low, high]: {escape(bootstrap.describe())}; " if bootstrap else "") + (
        r"otherwise mean $\pm$ std over identities (or folds, or KID subsets). "
        r"$\uparrow$ higher is better, $\downarrow$ lower is better.")
    lines = [
        "% fsbench report: needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{escape(title)}. {how}}}",
        f"\\label{{{label}}}",
        "\\begin{tabular}{l" + "r" * n + "}",
        "\\toprule",
        header + " \\\\",
        "\\midrule",
    ]
    for name, cells in table.rows:
        shown = escape(name) + (" (reference)" if name in refs else "")
        lines.append(" & ".join([shown] + [cell(c) for c in cells]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"

"""The headline numbers of a metric result: what `evaluate`'s table and `report`'s columns show.

Both commands ask this module, so they cannot drift apart. A metric shows its class's
`primary` scalar, then its `also_shown` scalars (prdc: recall, density and coverage beside
precision), each as its own cell; a "mean" is shown as "mean ± std" when "std" is there.
A metric no installed plugin knows (a metrics.json written elsewhere) shows its "mean", or
else its first scalar.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fsbench.errors import UsageError


@dataclass(frozen=True)
class Headline:
    scalar: str  # "precision", "mean", ...
    value: float | None
    std: float | None  # only for a "mean" with a "std" beside it
    low: float | None = None  # a confidence interval, when `report` bootstrapped one
    high: float | None = None

    def text(self) -> str:
        """The cell as `evaluate` prints it: '0.6758 ± 0.0790'."""
        return format_value(self.value, self.std)

    def has_interval(self) -> bool:
        return not (_missing(self.value) or _missing(self.low) or _missing(self.high))

    def interval_text(self) -> str:
        """'0.6758 [0.6512, 0.7001]' with an interval, else the `evaluate` cell."""
        return format_interval(self.value, self.low, self.high) if self.has_interval() else self.text()


def _metric_class(metric: str):
    """The registered class of a metric spec ("fd:dlib" -> FD), or None when none is installed."""
    from fsbench.registry import get_registry

    try:
        return get_registry().get("metric", metric.partition(":")[0])
    except UsageError:
        return None


def headline_scalars(metric: str, available: Iterable[str]) -> list[str]:
    """The names of the scalars shown for `metric` (a spec), in order, among `available`."""
    available = [a for a in available if a != "std"]
    cls = _metric_class(metric)
    wanted = (cls.primary, *cls.also_shown) if cls is not None else ("mean",)
    names = [n for n in wanted if n in available]
    return names or available[:1]


def headlines(metric: str, scalars: Mapping[str, float | None]) -> list[Headline]:
    """The cells `evaluate` shows for one metric result (and `report` for one row of it)."""
    out = []
    for name in headline_scalars(metric, scalars):
        std = scalars.get("std") if name == "mean" else None
        out.append(Headline(name, scalars[name], std))
    return out


def arrow(metric: str) -> str:
    """"↑" when higher is better, "↓" when lower is, "" when neither or unknown."""
    cls = _metric_class(metric)
    better = cls.higher_is_better if cls is not None else None
    return {True: "↑", False: "↓", None: ""}[better]


def _missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def format_value(value: float | None, std: float | None = None) -> str:
    """'0.6758 ± 0.079': `fsbench.ui.format_number` (4 significant digits, scientific below 1e-3:
    DIV 2.81e-4, KID ~1e-5), as every table writes numbers; '-' when missing."""
    from fsbench.ui import format_number

    if _missing(value):
        return "-"
    if _missing(std):
        return format_number(value)
    return f"{format_number(value)} ± {format_number(std)}"


def format_interval(value: float | None, low: float | None, high: float | None) -> str:
    """'0.6758 [0.6512, 0.7001]': a value and its confidence interval, each as `format_value` writes numbers."""
    from fsbench.ui import format_number

    if _missing(value):
        return "-"
    if _missing(low) or _missing(high):
        return format_number(value)
    return f"{format_number(value)} [{format_number(low)}, {format_number(high)}]"

"""How every command talks to people and to programs.

Tables and human summaries go to stdout; progress bars, warnings and errors go to stderr.
With ``--json`` a command prints exactly one JSON object on stdout and nothing else there,
so ``fsbench evaluate ... --json | jq`` always works.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

# Wide when piped (CI logs, files): rich would otherwise wrap tables at 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False)

T = TypeVar("T")


def _json_safe(value: Any) -> Any:
    """NaN/inf become null; numpy scalars and arrays become plain Python."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    return json.dumps(_json_safe(obj), indent=None, sort_keys=False, default=str)


def emit(obj: Mapping[str, Any], *, as_json: bool, table: Table | None = None) -> None:
    """Print a command's result: one JSON object, or the table (if any) for people."""
    if as_json:
        print(dumps(obj))
    elif table is not None:
        out.print(table)


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    """A rich table; floats are shown with 4 decimals, None/NaN as a dash."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(str(c))
    for row in rows:
        t.add_row(*(_cell(v) for v in row))
    return t


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def progress() -> Progress:
    """The one progress bar style of fsbench, on stderr (silent when stderr is not a tty)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )


def track(items: Iterable[T], description: str, total: int | None = None, every: float = 0.1) -> Iterator[T]:
    """Iterate with a progress bar; `total` defaults to len(items).

    The bar advances at most every `every` seconds: at a thousand items a second, a bar
    update per item costs as much as the item's own work (rendering, writing)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress() as bar:
        task = bar.add_task(description, total=total, rate="")
        pending, last = 0, time.monotonic()
        for item in items:
            yield item
            pending += 1
            now = time.monotonic()
            if now - last >= every:
                bar.update(task, advance=pending)
                pending, last = 0, now
        bar.update(task, advance=pending)


def _line(label: str, style: str, message: str) -> Text:
    """`label: message` with the message taken literally: a file called ``x[/]``,
    ``faces[v2]`` or ``pixels:zzz:`` must print as itself, not as rich markup or an emoji."""
    return Text.assemble((f"{label}:", style), " ", str(message))


def warn(message: str) -> None:
    err.print(_line("warning", "yellow", message), soft_wrap=True, markup=False, emoji=False, highlight=False)


def error(message: str) -> None:
    """The one line of a failed command, on stderr."""
    err.print(_line("error", "red", message), soft_wrap=True, markup=False, emoji=False, highlight=False)

"""How every command talks to people and to programs.

Tables and human summaries go to stdout; progress, warnings and errors go to stderr.
With ``--json`` a command prints exactly one JSON object on stdout and nothing else there,
so ``fsbench evaluate ... --json | jq`` always works.

Width: ``COLUMNS`` when set, else the terminal's width, else 100 columns (piped to a file or
a log). Tables shrink and wrap their text columns to fit, and never cut a number (see
`table`); every number in a table is written by `format_number`.

Progress: on a terminal, rich's bar. When stderr is not a terminal (Slurm, nohup, CI
logs), plain lines instead, at most one every ``FSBENCH_PROGRESS_INTERVAL`` seconds
(default 5; 0 prints every update)::

    sampling vigface (shard 0/1): 320/1000 images (32 %), 41 s elapsed, ~87 s left
    sampling vigface (shard 0/1): 1000/1000 images, done in 2 min 08 s

A task shorter than the interval prints nothing; one that printed a line, or ran for the
interval or longer, ends with one ``done`` line (not when it fails: the error says so).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from numbers import Integral, Real
from typing import Any, TypeVar

from rich.console import Console, ConsoleDimensions, ConsoleOptions, RenderResult
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

PIPED_COLUMNS = 100  # the width of tables written to a file or a log, unless COLUMNS says otherwise
DEFAULT_PROGRESS_INTERVAL = 5.0  # seconds between two plain progress lines; FSBENCH_PROGRESS_INTERVAL overrides


class _Console(Console):
    """A console whose width is decided at each print, not at import: ``COLUMNS`` when set
    (a terminal or not), else the terminal's width, else `PIPED_COLUMNS`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._width = None  # rich reads COLUMNS once, here; `size` reads it at every print

    @property
    def size(self) -> ConsoleDimensions:
        height = super().size.height
        if self._width is not None:  # set explicitly (console.width = n)
            return ConsoleDimensions(self._width, height)
        return ConsoleDimensions(columns(self.file), height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def columns(stream: Any = None) -> int:
    """The width fsbench writes `stream` (default: stdout) at."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        pass
    return PIPED_COLUMNS


out = _Console(highlight=False)
err = _Console(stderr=True, highlight=False)

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


# --------------------------------------------------------------------------- numbers


def format_number(value: Any) -> str:
    """The one way fsbench shows a number to people (tables, summaries; JSON keeps full precision).

    - integers (Python or numpy: counts, steps, bytes) as integers: ``12``, ``3``, ``649123``;
    - floats to 4 significant digits, trailing zeros dropped: ``0.8432``, ``0.5``, ``3``, ``12350``;
    - scientific when the rounded value is below 1e-3 or at least 1e6, in the short form that
      Python still reads as a float: ``2.81e-4``, ``1.235e6`` (not ``2.81e-04``, ``1.235e+06``);
    - None and NaN as ``-``; infinities as ``inf`` / ``-inf``; booleans as ``True`` / ``False``;
      anything else as ``str(value)``.
    """
    if value is None:
        return "-"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return str(bool(value))
    if isinstance(value, Integral):
        return str(int(value))
    if not isinstance(value, Real):
        return str(value)
    x = float(value)
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    r = float(f"{x:.4g}")  # 4 significant digits; the notation is decided on the rounded value
    if r == 0:
        return "0"
    if abs(r) < 1e-3 or abs(r) >= 1e6:
        mantissa, exponent = f"{r:.3e}".split("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    if abs(r) >= 1e4:
        return f"{r:.0f}"  # 4 significant digits of a number >= 1e4 are a whole number
    return f"{r:.4g}"  # fixed notation between 1e-3 and 1e4


# --------------------------------------------------------------------------- tables

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMERIC = re.compile(rf"{_NUMBER}(?:[/x:]{_NUMBER})*%?")


def _numeric_width(text: str) -> int:
    """The longest word of `text` that is a number (``0.8432``, ``2.81e-4,``, ``k=12``, ``36/36``,
    ``(93.5%)``): a column must stay at least this wide, so that no number is cut in two."""
    longest = 0
    for word in text.split():
        core = word.rsplit("=", 1)[-1].strip("()[]{},;:")
        if core and _NUMERIC.fullmatch(core):
            longest = max(longest, len(word))
    return longest


def _plain(cell: Any) -> str:
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        try:
            return Text.from_markup(cell).plain
        except Exception:  # rich reports bad markup when it renders the cell
            return cell
    return ""


class _FitTable(Table):
    """A table that fits the console: text columns shrink (widest first) and wrap, a column
    holding numbers never gets narrower than its longest number, and a one-row table that does
    not fit without breaking words is shown as one ``field value`` line per column instead."""

    def _floors(self, console: Console, options: ConsoleOptions) -> tuple[list[int], list[list[int]]]:
        """The natural width of each column, and the narrowest widths to try in turn: no word
        broken, then at least 4 characters, then 1; never narrower than a number (padding included)."""
        natural, words, soft, hard = [], [], [], []
        for column in self.columns:
            pad = self._get_padding_width(column._index)
            measured = self._measure_column(console, options, column)
            width = measured.maximum or 1
            numbers = max([_numeric_width(_plain(c)) for c in (column.header, *column.cells)], default=0)
            natural.append(width)
            words.append(min(width, max(measured.minimum, pad + numbers)))
            soft.append(min(width, pad + max(numbers, 4)))
            hard.append(min(width, pad + max(numbers, 1)))
        return natural, [words, soft, hard]

    def _calculate_column_widths(self, console: Console, options: ConsoleOptions) -> list[int]:
        if self.expand or any(c.width is not None or c.no_wrap for c in self.columns):
            return super()._calculate_column_widths(console, options)
        max_width = options.max_width
        natural, tiers = self._floors(console, options)
        if sum(natural) <= max_width:
            return natural
        floors = next((t for t in tiers if sum(t) <= max_width), tiers[-1])
        if sum(floors) >= max_width:
            return floors  # wider than the console rather than a number cut in two
        # the widest columns give up width first, down to their floors
        lo, hi = 0, max(natural)
        while lo < hi:  # the highest level at which the columns still fit
            mid = (lo + hi + 1) // 2
            if sum(max(f, min(n, mid)) for f, n in zip(floors, natural)) <= max_width:
                lo = mid
            else:
                hi = mid - 1
        widths = [max(f, min(n, lo)) for f, n in zip(floors, natural)]
        spare = max_width - sum(widths)
        for i, (w, n) in enumerate(zip(widths, natural)):
            if spare <= 0:
                break
            if w < n:
                widths[i] += 1
                spare -= 1
        return widths

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if len(self.rows) == 1 and len(self.columns) > 2 and self.width is None:
            room = options.max_width - self._extra_width
            _, (words, _, _) = self._floors(console, options.update_width(max(room, 1)))
            if sum(words) > room:
                yield self._transposed()
                return
        yield from super().__rich_console__(console, options)

    def _transposed(self) -> Table:
        t = _FitTable(title=self.title, title_justify=self.title_justify, show_header=False)
        t.add_column(overflow="fold")
        t.add_column(overflow="fold")
        for column in self.columns:
            t.add_row(column.header, *list(column.cells)[:1])
        return t


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    """A rich table that fits the console; numbers are written by `format_number`.

    Text wraps (a word longer than its column folds onto the next line) rather than being cut
    with an ellipsis, and a column never gets narrower than its longest number."""
    t = _FitTable(title=title, title_justify="left")
    for c in columns:
        t.add_column(str(c), overflow="fold")
    for row in rows:
        t.add_row(*(_cell(v) for v in row))
    return t


def _cell(v: Any) -> str:
    return v if isinstance(v, str) else format_number(v)


# --------------------------------------------------------------------------- progress


def progress_interval() -> float:
    """Seconds between two plain progress lines: FSBENCH_PROGRESS_INTERVAL, else 5 (0: every update)."""
    raw = os.environ.get("FSBENCH_PROGRESS_INTERVAL", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_PROGRESS_INTERVAL
    except ValueError:
        return DEFAULT_PROGRESS_INTERVAL
    return value if math.isfinite(value) and value >= 0 else DEFAULT_PROGRESS_INTERVAL


def _live(console: Console) -> bool:
    """Whether `console` can redraw a bar in place: a real terminal (FORCE_COLOR alone does not
    make a log file one); TTY_INTERACTIVE=0/1 decides, as for rich."""
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        tty = bool(console.file.isatty())
    except (AttributeError, ValueError, OSError):
        return False
    return tty and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


def _duration(seconds: float) -> str:
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 3599.5:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def _count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else format_number(x)


class _Task:
    def __init__(self, description: str, total: float | None, completed: float, visible: bool,
                 fields: dict[str, Any], now: float) -> None:
        self.description, self.total, self.completed, self.visible = description, total, completed, visible
        self.fields = fields
        self.start_completed, self.start, self.last_line, self.lines, self.ended = completed, now, now, 0, False

    def line(self, now: float, done: bool) -> str:
        unit = str(self.fields.get("unit") or "")
        count = _count(self.completed) if self.total is None else f"{_count(self.completed)}/{_count(self.total)}"
        parts = [f"{count} {unit}".rstrip()]
        if self.total and not done:
            parts[0] += f" ({math.floor(100 * min(self.completed / self.total, 1.0))} %)"
        if self.fields.get("rate"):
            parts.append(str(self.fields["rate"]).strip())
        elapsed = now - self.start
        if done:
            parts.append(f"done in {_duration(elapsed)}")
        else:
            parts.append(f"{_duration(elapsed)} elapsed")
            speed = (self.completed - self.start_completed) / elapsed if elapsed > 0 else 0.0
            if self.total is not None and speed > 0:
                parts.append(f"~{_duration(max(self.total - self.completed, 0) / speed)} left")
        return f"{self.description}: " + ", ".join(parts)


class PlainProgress:
    """What fsbench uses of `rich.progress.Progress` (a context manager with add_task, update,
    advance), printing a plain line per task at most every `interval` seconds, and one line
    when a task that showed progress (or lasted `interval` or longer) ends."""

    def __init__(self, console: Console, interval: float, clock: Any = time.monotonic) -> None:
        self.console, self.interval, self.clock = console, interval, clock
        self._tasks: dict[int, _Task] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            for task_id in list(self._tasks):
                self.stop_task(task_id)

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: float = 0,
                 visible: bool = True, **fields: Any) -> int:
        task_id = len(self._tasks)
        self._tasks[task_id] = _Task(description, total, completed, visible, fields, self.clock())
        return task_id

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, visible: bool | None = None,
               refresh: bool = False, **fields: Any) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if description is not None:
            task.description = description
        if visible is not None:
            task.visible = visible
        task.fields.update(fields)
        now = self.clock()
        finished = task.total is not None and task.completed >= task.total  # the `done` line follows
        if task.visible and not task.ended and not finished and now - task.last_line >= self.interval:
            self._print(task.line(now, done=False))
            task.last_line, task.lines = now, task.lines + 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def stop_task(self, task_id: int) -> None:
        """End a task: its `done` line, when it showed progress or lasted the interval."""
        task = self._tasks[task_id]
        now = self.clock()
        if task.visible and not task.ended and (task.lines or now - task.start >= self.interval):
            self._print(task.line(now, done=True))
        task.ended = True

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, emoji=False, highlight=False, soft_wrap=True)


def progress() -> Progress | PlainProgress:
    """The one progress display of fsbench, on stderr: rich's bar on a terminal, else plain lines
    (`PlainProgress`, at most one every `progress_interval()` seconds).

    Use it as rich's: ``with ui.progress() as bar: task = bar.add_task(desc, total=n, rate="",
    unit="images")``, then ``bar.update(task, advance=k)``; the optional ``unit`` names what
    is counted in the plain lines, ``rate`` is free text shown beside the count."""
    if not _live(err):
        return PlainProgress(err, progress_interval())
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None, every: float = 0.1,
          unit: str = "") -> Iterator[T]:
    """Iterate with progress (`progress`); `total` defaults to len(items), `unit` names an item.

    The bar advances at most every `every` seconds: at a thousand items a second, a bar
    update per item costs as much as the item's own work (rendering, writing)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress() as bar:
        if isinstance(bar, PlainProgress):
            every = min(every, bar.interval)
        task = bar.add_task(description, total=total, rate="", unit=unit)
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


def note(message: str) -> None:
    """A `note:` line under a command's table, on stdout, wrapped to the table's width."""
    out.print(_line("note", "dim", message), markup=False, emoji=False, highlight=False)


def warn(message: str) -> None:
    err.print(_line("warning", "yellow", message), soft_wrap=True, markup=False, emoji=False, highlight=False)


def error(message: str) -> None:
    """The one line of a failed command, on stderr."""
    err.print(_line("error", "red", message), soft_wrap=True, markup=False, emoji=False, highlight=False)

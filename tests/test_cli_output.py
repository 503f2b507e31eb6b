"""What commands print for people: progress in logs, tables that fit the terminal, numbers.

Real commands run through the `cli` fixture (click's CliRunner: stdout and stderr apart, and
neither is a terminal, as under Slurm, nohup or CI), on a small procedural world.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from rich.console import Console
from rich.progress import Progress

from fsbench import ui

NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 identities x 3 images of the embedded face world, no masks."""
    root = tmp_path_factory.mktemp("world") / "W"
    run_cli("data", "make", "procedural", "--out", root, "--ids", 12, "--per-id", 3, "--seed", 0, "--no-masks")
    return root


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value, shown", [
    (0.000281, "2.81e-4"),  # scientific below 1e-3, in the short form (not 2.81e-04)
    (12, "12"),
    (np.int64(3), "3"),
    (0.84321, "0.8432"),
    (1234567.0, "1.235e6"),  # scientific from 1e6 on (not 1.235e+06)
    (649123, "649123"),  # integers stay whole, however large: counts, bytes, steps
    (12345.6, "12350"),  # 4 significant digits, fixed notation below 1e6
    (36.0, "36"),  # a count saved as a float
    (0.5, "0.5"),
    (-2.5e-5, "-2.5e-5"),
    (0.00099996, "0.001"),  # the notation follows the rounded value
    (999999.9, "1e6"),
    (np.float32(0.25), "0.25"),
    (0.0, "0"),
    (float("nan"), "-"),
    (None, "-"),
    (float("inf"), "inf"),
    (True, "True"),
    (np.bool_(False), "False"),
    ("judge-r4", "judge-r4"),
])
def test_format_number(value, shown):
    assert ui.format_number(value) == shown


def test_format_number_reads_back_as_the_rounded_value():
    rng = np.random.default_rng(0)
    for x in np.concatenate([10.0 ** rng.uniform(-12, 12, 300), -(10.0 ** rng.uniform(-12, 12, 300))]):
        assert float(ui.format_number(float(x))) == float(f"{x:.4g}")


def test_table_cells_use_the_formatter():
    t = ui.table("t", ["a", "b", "c", "d"], [[0.000281, np.int64(3), float("nan"), "0.123456"]])
    buf = io.StringIO()
    Console(file=buf, width=80).print(t)
    text = buf.getvalue()
    assert "2.81e-4" in text and " 3 " in text and " - " in text
    assert "0.123456" in text  # text is shown as given, even when it looks like a number


# --------------------------------------------------------------------------- width


def _render(renderable, columns: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    buf = io.StringIO()
    ui._Console(file=buf, highlight=False).print(renderable)
    return buf.getvalue().splitlines()


def test_width_is_columns_else_100_when_piped(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert ui.columns(io.StringIO()) == ui.PIPED_COLUMNS == 100
    monkeypatch.setenv("COLUMNS", "73")
    assert ui.columns(io.StringIO()) == 73
    assert ui.out.width == 73 and ui.err.width == 73  # read at each print, not at import
    monkeypatch.setenv("COLUMNS", "")
    assert ui.out.width == 100


@pytest.mark.parametrize("columns", [40, 60, 100])
def test_tables_fit_and_never_cut_a_number(columns, monkeypatch):
    numbers = [0.8432, 2.81e-4, 1234567.0, 123456789, 0.000012345]
    rows = [["a long description that has to wrap somewhere " * 2, n, f"k={ui.format_number(n)}, other=0.25",
             "judge-r4-9c14e2377548-bilinear-aa48"] for n in numbers]
    lines = _render(ui.table("a title that is long enough to wrap as well " * 2, ["what", "value", "other", "space"],
                             rows), columns, monkeypatch)
    text = "\n".join(lines)
    assert max(len(ln) for ln in lines) <= columns, text
    assert "…" not in text
    for n in numbers:
        assert re.search(rf"(?<![\w.+-]){re.escape(ui.format_number(n))}(?![\w.])", text), (n, text)
    assert "k=2.81e-4," in text  # a number inside text stays on one line too


def test_a_one_row_table_too_wide_for_the_terminal_turns_on_its_side(monkeypatch):
    head = ["accuracy", "std", "TAR@FAR=1e-3", "FAR", "TAR@FAR=1e-4", "AUC", "threshold (mean)"]
    values = [0.923456, 0.0123456, 0.81234, 0.00098765, 0.5, 0.971234, 0.312345]
    wide = _render(ui.table("verification", head, [values]), 100, monkeypatch)
    assert any("accuracy" in ln and "AUC" in ln for ln in wide)  # side by side: one header line
    narrow = _render(ui.table("verification", head, [values]), 40, monkeypatch)
    assert max(len(ln) for ln in narrow) <= 40, "\n".join(narrow)
    for h, v in zip(head, values):
        assert any(h in ln and f" {ui.format_number(v)} " in ln for ln in narrow), (h, "\n".join(narrow))


def _scalars(metrics: dict) -> list[tuple[str, str, float]]:
    return [(m, k, v) for m, r in metrics.items() for k, v in r.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]


@pytest.mark.parametrize("columns", [60, 100])
def test_evaluate_table_fits_columns_and_shows_every_number(columns, world, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    out = tmp_path / "ev"
    r = cli("evaluate", "--dataset", world, "--metrics", "summary,cst,div,sep", "--out", out)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= columns, r.stdout
    assert "…" not in r.stdout
    shown = [float(t) for t in NUMBER.findall(r.stdout)]
    saved = json.loads((out / "metrics.json").read_text())["metrics"]
    scalars = _scalars(saved)
    assert {m for m, _, _ in scalars} == {"summary", "cst", "div", "sep"} and len(scalars) >= 15
    for metric, key, v in scalars:
        assert float(f"{v:.4g}") in shown, (metric, key, v, r.stdout)
    div = saved["div"]["mean"]  # ~1e-4: shown as 1.881e-4, not 0.0002
    assert 1e-4 <= div < 1e-3 and re.search(rf" {re.escape(ui.format_number(div))} ", r.stdout)
    assert re.fullmatch(r"\d\.\d{1,3}e-4", ui.format_number(div))


def test_json_keeps_full_precision_and_stdout_only_json(world, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("FSBENCH_PROGRESS_INTERVAL", "0")
    monkeypatch.setenv("COLUMNS", "40")
    out = tmp_path / "ev"
    r = cli("evaluate", "--dataset", world, "--metrics", "summary,cst,div,sep", "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    printed = json.loads(r.stdout)  # exactly one JSON object, no progress, no table
    assert r.stdout.count("\n") == 1
    assert printed["metrics"] == json.loads((out / "metrics.json").read_text())["metrics"]
    assert len(repr(printed["metrics"]["cst"]["mean"])) > 8  # not rounded for people
    assert "embedding W (judge): 36/36 images, done in" in r.stderr  # progress went to stderr


# --------------------------------------------------------------------------- progress

LINE = re.compile(r"^rendering faces: (\d+)/36 images(?: \((\d+) %\), [\d.]+ (?:s|min).* elapsed(?:, ~.+ left)?"
                  r"|, done in .+)$")


def test_progress_lines_rise_to_the_total_when_stderr_is_not_a_terminal(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("FSBENCH_PROGRESS_INTERVAL", "0")
    r = cli("data", "make", "procedural", "--out", tmp_path / "W", "--ids", 12, "--per-id", 3, "--seed", 0,
            "--no-masks", "--workers", 0)
    assert r.exit_code == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("rendering faces:")]
    assert all(LINE.match(ln) for ln in lines), r.stderr
    counts = [int(LINE.match(ln).group(1)) for ln in lines]
    assert len(counts) >= 3 and counts == sorted(counts) and counts[-1] == 36, r.stderr
    assert counts[0] < 36 and lines[-1].startswith("rendering faces: 36/36 images, done in ")
    assert "\x1b" not in r.stderr and "━" not in r.stderr  # no bar, no escape codes in a log
    assert "rendering faces" not in r.stdout


def test_progress_is_quiet_for_tasks_shorter_than_the_interval(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("FSBENCH_PROGRESS_INTERVAL", "600")
    r = cli("data", "make", "procedural", "--out", tmp_path / "W", "--ids", 2, "--per-id", 2, "--no-masks")
    assert r.exit_code == 0 and "rendering faces" not in r.stderr, r.stderr


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _plain(interval: float) -> tuple[ui.PlainProgress, io.StringIO, Clock]:
    buf, clock = io.StringIO(), Clock()
    return ui.PlainProgress(Console(file=buf, width=200), interval, clock=clock), buf, clock


def test_plain_progress_prints_at_most_every_interval_and_once_at_the_end():
    bar, buf, clock = _plain(5.0)
    with bar:
        task = bar.add_task("sample vigface", total=1000, rate="", unit="images")
        for k in range(1, 1001):  # 10 images a second for 100 s
            clock.t = k / 10
            bar.update(task, advance=1)
        clock.t = 100.5
    lines = buf.getvalue().splitlines()
    assert len(lines) == 20, lines  # at 5, 10, ..., 95 s, and the end
    assert lines[0] == "sample vigface: 50/1000 images (5 %), 5.0 s elapsed, ~1 min 35 s left"
    assert lines[5] == "sample vigface: 300/1000 images (30 %), 30 s elapsed, ~1 min 10 s left"
    assert lines[13] == "sample vigface: 700/1000 images (70 %), 1 min 10 s elapsed, ~30 s left"
    assert lines[-1] == "sample vigface: 1000/1000 images, done in 1 min 40 s"


def test_plain_progress_details():
    bar, buf, clock = _plain(0.0)
    with bar:
        hidden = bar.add_task("hidden", total=3, rate="", visible=False)
        train = bar.add_task("train", total=10, completed=4, rate="", unit="steps")  # resumed at step 4
        unknown = bar.add_task("decoding", total=None, rate="")
        clock.t = 2.0
        bar.update(hidden, advance=1)
        bar.update(train, advance=2, rate="loss 1.234 120 img/s")
        bar.update(unknown, advance=7)
    assert buf.getvalue().splitlines() == [
        "train: 6/10 steps (60 %), loss 1.234 120 img/s, 2.0 s elapsed, ~4.0 s left",
        "decoding: 7, 2.0 s elapsed",
        "train: 6/10 steps, loss 1.234 120 img/s, done in 2.0 s",
        "decoding: 7, done in 2.0 s",
    ]


def test_plain_progress_prints_no_done_line_when_the_work_fails():
    bar, buf, clock = _plain(5.0)
    with pytest.raises(RuntimeError), bar:
        task = bar.add_task("embedding", total=10, rate="")
        clock.t = 6.0
        bar.update(task, advance=3)
        raise RuntimeError("corrupt image")
    assert buf.getvalue().splitlines() == ["embedding: 3/10 (30 %), 6.0 s elapsed, ~14 s left"]


def test_progress_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("FSBENCH_PROGRESS_INTERVAL", raising=False)
    assert ui.progress_interval() == 5.0
    for raw, expected in (("0", 0.0), ("2.5", 2.5), ("soon", 5.0), ("-1", 5.0), ("nan", 5.0)):
        monkeypatch.setenv("FSBENCH_PROGRESS_INTERVAL", raw)
        assert ui.progress_interval() == expected, raw


def test_a_terminal_gets_the_bar_and_a_log_plain_lines(monkeypatch):
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    assert isinstance(ui.progress(), Progress)
    monkeypatch.setenv("TTY_INTERACTIVE", "0")
    assert isinstance(ui.progress(), ui.PlainProgress)
    monkeypatch.delenv("TTY_INTERACTIVE")
    monkeypatch.setenv("FORCE_COLOR", "1")  # colours in a CI log do not make it a terminal
    assert isinstance(ui.progress(), ui.PlainProgress)


def test_every_progress_display_goes_through_ui():
    """No module draws its own bar: progress is `ui.progress()` / `ui.track()` everywhere."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("fsbench", "plugins", "generators"):
        for path in (root / folder).rglob("*.py"):
            if path == root / "fsbench" / "ui.py":
                continue
            text = path.read_text()
            if re.search(r"rich\.progress|\bProgress\(|\btqdm\b|rich\.live", text):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []

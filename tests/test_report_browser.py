"""`fsbench report`'s HTML page in a real browser: headless Chromium (Debian's `chromium`) loads
report.html from a file, every figure decodes, every table has rows.

The report carries no script, so the page is examined from outside, through the Chrome DevTools
Protocol over ``--remote-debugging-pipe`` (NUL-separated JSON on the browser's fds 3 and 4; the
standard library suffices): open the file, wait for its load event, evaluate one expression in
the page. Skips where Chromium is not installed (`.ci/run` installs it)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_cli

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install chromium")

METRICS = "cst,div,sep,iou"

# Evaluated in the loaded page: what a reader would get of every image and table, as JSON.
_LOOK = """(async () => {
  await new Promise((done) => document.readyState === "complete" ? done() : addEventListener("load", done, {once: true}));
  const images = Array.from(document.images);
  const errors = await Promise.all(images.map((im) => im.decode().then(() => "", (e) => String(e))));
  return JSON.stringify({
    url: document.URL,
    title: document.title,
    scripts: document.scripts.length,
    images: images.map((im, i) => ({alt: im.alt, complete: im.complete, width: im.naturalWidth, height: im.naturalHeight,
                                    shown: im.getBoundingClientRect().width, decode_error: errors[i]})),
    tables: Array.from(document.querySelectorAll("table")).map((t) => ({
      rows: t.rows.length,
      head: t.tHead ? t.tHead.rows.length : 0,
      body: Array.from(t.tBodies).reduce((n, b) => n + b.rows.length, 0),
      cells: t.querySelectorAll("td").length,
    })),
  });
})()"""


class Chromium:
    """Headless Chromium driven over --remote-debugging-pipe; every wait bounded by `timeout`."""

    def __init__(self, work: Path, timeout: float = 60.0) -> None:
        work.mkdir(parents=True, exist_ok=True)
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        # above fd 4, so that the child's dup2 onto 3 and 4 cannot clobber one of them
        reads, writes = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser))
        os.close(to_browser)
        os.close(from_browser)

        def pipes_on_3_and_4() -> None:  # the browser reads commands on fd 3 and writes answers on fd 4
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.log = work / "chromium.log"
        args = ["--headless=new", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
                "--remote-debugging-pipe", f"--user-data-dir={work / 'profile'}", "about:blank"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([CHROMIUM, *args], pass_fds=(3, 4), preexec_fn=pipes_on_3_and_4,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        os.close(reads)
        os.close(writes)
        self.timeout, self.deadline = timeout, time.monotonic() + timeout
        self._buffer, self._id, self._events = b"", 0, []

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer in time; its log:\n{self.tail()}")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise EOFError(f"chromium closed the pipe; its log:\n{self.tail()}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        try:
            os.write(self._out, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise EOFError(f"chromium is gone (exit {self.proc.poll()}); its log:\n{self.tail()}") from None
        while True:
            answer = self._receive()
            if answer.get("id") == self._id:
                assert "error" not in answer, (method, answer["error"])
                return answer["result"]
            self._events.append(answer)

    def wait_for(self, method: str, session: str) -> dict:
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self._events.pop(i)
            self._events.append(self._receive())

    def look(self, page: Path) -> tuple[dict, list[str]]:
        """Open `page`, wait for its load event, evaluate _LOOK in it: (that summary, console errors)."""
        self.deadline = time.monotonic() + self.timeout
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Log.enable", session=session)
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        self.wait_for("Page.loadEventFired", session)
        result = self.send("Runtime.evaluate", {"expression": _LOOK, "awaitPromise": True, "returnByValue": True},
                           session=session)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        errors = [e["params"]["entry"]["text"] for e in self._events
                  if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
        self.send("Target.closeTarget", {"targetId": target})
        return json.loads(result["result"]["value"]), errors

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(ln for ln in lines if "dbus" not in ln)[-3000:]

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, EOFError, TimeoutError, AssertionError):  # already gone: wait, or kill
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._in)
        os.close(self._out)


class _Source(HTMLParser):
    """What the HTML source holds: its <img> and <table> start tags."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        self.images += tag == "img"
        self.tables += tag == "table"


def source_counts(html: Path) -> tuple[int, int]:
    parser = _Source()
    parser.feed(html.read_text(encoding="utf-8"))
    return parser.images, parser.tables


def problems(seen: dict, images: int, tables: int) -> list[str]:
    """What is wrong with the page as the browser saw it; [] when nothing is."""
    out = []
    if len(seen["images"]) != images:
        out.append(f"{len(seen['images'])} images in the browser, {images} <img> in the source")
    if len(seen["tables"]) != tables:
        out.append(f"{len(seen['tables'])} tables in the browser, {tables} <table> in the source")
    for im in seen["images"]:
        if not (im["complete"] and im["width"] > 0 and im["height"] > 0) or im["decode_error"]:
            out.append(f"image {im['alt']!r} does not decode: {im}")
        elif im["shown"] <= 0:
            out.append(f"image {im['alt']!r} decodes but takes no room on the page")
    for i, t in enumerate(seen["tables"]):
        if t["body"] < 1 or t["rows"] <= t["head"] or t["cells"] < 1:
            out.append(f"table {i} has no rows beyond its header: {t}")
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A real report of two procedural worlds, scored by the shipped judge: the real set
    (seed 0) and a synthetic one (seed 1) against it."""
    root = tmp_path_factory.mktemp("browser")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FSBENCH_CACHE", str(root / "_cache"))
        mp.chdir(root)
        for name, seed in (("W0", 0), ("W1", 1)):
            run_cli("data", "make", "procedural", "--out", name, "--ids", 20, "--per-id", 4, "--seed", seed,
                    "--no-masks")
        run_cli("evaluate", "--dataset", "W0", "--metrics", "cst,div,sep", "--out", "real_w0")
        run_cli("evaluate", "--dataset", "W1", "--reference", "W0", "--metrics", METRICS, "--out", "syn_w1")
        run_cli("report", "real_w0", "syn_w1", "--out", "rep")
    return root / "rep" / "report.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(tmp_path_factory.mktemp("chromium"))
    yield chromium
    chromium.close()


def test_chromium_loads_the_report_every_image_decodes_every_table_has_rows(report, browser):
    images, tables = source_counts(report)
    assert images >= 4 and tables >= 3  # 2 sample grids, Fig. 8, 1 histogram; summary, numbers, provenance
    seen, errors = browser.look(report)
    assert seen["url"] == report.resolve().as_uri() and seen["title"] == "fsbench comparison", seen
    assert seen["scripts"] == 0
    assert problems(seen, images, tables) == []
    assert errors == []


def test_the_check_names_a_broken_image_and_an_empty_table(report, browser, tmp_path):
    """The same page with one figure cut to the PNG signature and the first table's rows removed:
    the browser check names both (it is not a check that passes whatever the page holds)."""
    html = report.read_text(encoding="utf-8")
    html = re.sub(r'src="data:image/png;base64,[^"]*"', 'src="data:image/png;base64,iVBORw0KGgo="', html, count=1)
    html = re.sub(r"<tbody>.*?</tbody>", "<tbody></tbody>", html, count=1, flags=re.S)
    broken = tmp_path / "report.html"
    broken.write_text(html, encoding="utf-8")
    images, tables = source_counts(broken)
    seen, _ = browser.look(broken)
    found = problems(seen, images, tables)
    assert len(found) == 2, found
    assert "does not decode" in found[0] and "table 0 has no rows" in found[1]

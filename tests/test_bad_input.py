"""The bad-input corpus (issue 19): every class of mistaken or hostile input, run as a user runs
it (`fsbench ...` through the `cli` fixture, stdout and stderr apart).

Each failing case asserts what the README promises: exit code 2, exactly one line on stderr
that names the file or the option, no traceback, and nothing changed on disk that the user
did not ask for (a snapshot of the tree before and after). `--json` variants assert that
stdout is exactly one JSON object ``{"error": ..., "exit_code": 2}``.

Tests here run as root, which ignores file permissions, so a read-only folder and a full
disk are simulated in-process: the write calls for paths under one folder fail with the
errno the kernel would give (EACCES, ENOSPC), and the real chmod is applied as well for
a non-root run. `/sys`, read-only for everyone, is the one real read-only target used.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import shutil
import sys
import types
from pathlib import Path

import pytest
from conftest import write_folder

# --------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, str]:
    """Every folder and file under `root` (bytes names included), with each file's sha256."""
    out: dict[str, str] = {}
    for dirpath, _dirs, filenames in os.walk(os.fsencode(root)):
        rel = os.path.relpath(dirpath, os.fsencode(root))
        out[repr(rel)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[repr(os.path.join(rel, name))] = hashlib.sha256(fh.read()).hexdigest()
    return out


def assert_clear(result, *names: str, as_json: bool = False) -> str:
    """Exit 2, one `error:` line on stderr naming every one of `names`, no traceback; with
    `as_json`, stdout is exactly one JSON object holding the same message."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for name in names:
        assert name in line, (name, line)
    assert "Traceback" not in result.stdout + result.stderr
    if as_json:
        out = result.stdout.strip().splitlines()
        assert len(out) == 1, result.stdout
        obj = json.loads(out[0])
        assert obj == {"error": line.removeprefix("error: "), "exit_code": 2}
    else:
        assert result.stdout == ""
    return line


def _under(path, prefix: str) -> bool:
    if isinstance(path, int):
        path = os.readlink(f"/proc/self/fd/{path}") if os.path.exists(f"/proc/self/fd/{path}") else ""
    try:
        p = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return False
    return p == prefix or p.startswith(prefix + os.sep)


def _writing(mode: str) -> bool:
    return any(c in mode for c in "wax+")


class _FullFile:
    """A file object on a full disk: opening works, every write fails with ENOSPC (no file
    name, as the kernel reports it for a write to a descriptor)."""

    def __init__(self, fh) -> None:
        self._fh = fh

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


@pytest.fixture
def faults(monkeypatch):
    """faults.read_only(folder) / faults.full_disk(folder): writes under `folder` fail as on
    a read-only mount (EACCES) or a full disk (ENOSPC)."""
    real_open, real_os_open, real_mkdir, real_write = builtins.open, os.open, os.mkdir, os.write

    def read_only(folder: Path) -> None:
        prefix = os.path.abspath(folder)
        folder.chmod(0o555)  # real for a non-root run

        def deny(path):
            return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

        def open_(file, mode="r", *args, **kwargs):
            if _writing(mode) and not isinstance(file, int) and _under(file, prefix):
                raise deny(file)
            return real_open(file, mode, *args, **kwargs)

        def os_open(path, flags, mode=0o777, *, dir_fd=None):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _under(path, prefix):
                raise deny(path)
            return real_os_open(path, flags, mode, dir_fd=dir_fd)

        def mkdir(path, mode=0o777, *, dir_fd=None):
            if _under(path, prefix):
                raise deny(path)
            return real_mkdir(path, mode, dir_fd=dir_fd)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "mkdir", mkdir)

    def full_disk(folder: Path) -> None:
        prefix = os.path.abspath(folder)

        def open_(file, mode="r", *args, **kwargs):
            fh = real_open(file, mode, *args, **kwargs)
            if _writing(mode) and not isinstance(file, int) and _under(file, prefix):
                return _FullFile(fh)
            return fh

        def write(fd, data):
            if _under(fd, prefix):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)
        monkeypatch.setattr(os, "write", write)

    return types.SimpleNamespace(read_only=read_only, full_disk=full_disk)


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Work in tmp_path, with a small dataset `ds`, a plain file `afile` and a folder `adir`."""
    monkeypatch.chdir(tmp_path)
    write_folder(tmp_path / "ds", ids=3, per_id=2, size=16)
    (tmp_path / "afile").write_text("the user's file\n")
    (tmp_path / "adir").mkdir()
    return tmp_path


# --------------------------------------------------------------------------- file-system errors

EVAL = ("evaluate", "--dataset", "ds", "--embedder", "pixels", "--metrics", "summary")
MAKE = ("data", "make", "procedural", "--ids", "2", "--per-id", "1", "--size", "32", "--workers", "0")

# (case, fault, command, names the error line must hold)
FS_CASES = [
    ("show --out under a file", None, ("data", "show", "ds", "--out", "afile/sheet.png"), ("afile",)),
    ("evaluate --out is a file", None, (*EVAL, "--out", "afile"), ("afile", "not a folder")),
    ("make --out under a file", None, (*MAKE, "--out", "afile/world"), ("afile",)),
    ("show into a read-only folder", "read_only", ("data", "show", "ds", "--out", "adir/sheet.png"),
     ("adir/", "sheet.png", "Permission denied")),
    ("evaluate into a read-only folder", "read_only", (*EVAL, "--out", "adir/eval"), ("adir/eval", "Permission denied")),
    ("make into a read-only folder", "read_only", (*MAKE, "--out", "adir/world"), ("adir/world", "Permission denied")),
    ("show onto a full disk", "full_disk", ("data", "show", "ds", "--out", "adir/sheet.png"),
     ("--out adir/sheet.png", "No space left on device")),
    ("make onto a full disk", "full_disk", (*MAKE, "--out", "adir/world"), ("--out adir/world", "No space left")),
]


@pytest.mark.parametrize("case,fault,args,names", FS_CASES, ids=[c[0] for c in FS_CASES])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_file_system_errors_are_one_line(here, cli, faults, case, fault, args, names, as_json):
    before = snapshot(here)
    if fault is not None:
        getattr(faults, fault)(here / "adir")
    result = cli(*args, *(["--json"] if as_json else []))
    assert_clear(result, *names, as_json=as_json)
    (here / "adir").chmod(0o755)
    after = snapshot(here)
    if case.startswith("make onto"):  # the interrupted dataset waits, unfinished, for --resume
        after = {k: v for k, v in after.items() if "world.partial" not in k}
        assert not (here / "adir/world").exists()
    assert after == before


def test_a_real_read_only_target(here, cli):
    """/sys refuses new entries even to root (EPERM, or EROFS in a container)."""
    try:
        os.mkdir("/sys/fsbench-probe")
    except OSError:
        pass
    else:  # pragma: no cover - a writable /sys: nothing to test against
        os.rmdir("/sys/fsbench-probe")
        pytest.skip("/sys is writable here")
    assert_clear(cli("data", "show", "ds", "--out", "/sys/fsbench-test/sheet.png"), "/sys/fsbench-test")


def _non_utf8_dataset(root: Path) -> bytes:
    write_folder(root, ids=3, per_id=2, size=16)
    bad = os.fsencode(root / "id_001").replace(b"id_001", b"id_\xff01")
    os.rename(os.fsencode(root / "id_001"), bad)
    return bad


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes as a name")
@pytest.mark.parametrize("args", [
    ("data", "info", "odd"),
    ("evaluate", "--dataset", "odd", "--embedder", "pixels", "--metrics", "summary,cst", "--out", "ev"),
    ("evaluate", "--dataset", "ds", "--reference", "odd", "--embedder", "pixels", "--metrics", "summary",
     "--out", "ev"),
    ("data", "convert", "odd", "odd.rec"),
    ("data", "convert", "odd", "odd-rec", "--to", "rec"),
], ids=["info", "evaluate", "evaluate --reference", "convert to .rec", "convert --to rec"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_non_utf8_file_names_are_refused_before_anything_is_written(here, cli, args, as_json):
    _non_utf8_dataset(here / "odd")
    before = snapshot(here)
    line = assert_clear(cli(*args, *(["--json"] if as_json else [])), "odd", r"b'id_\xff01'", "not valid UTF-8",
                        as_json=as_json)
    assert "rename it" in line
    assert snapshot(here) == before  # convert wrote no half record set, evaluate no folder


def test_an_unwritable_cache_is_a_warning(here, cli, monkeypatch):
    """The embedding cache is optional: the evaluation finishes and says the cache was not kept."""
    result = cli(*EVAL[:-1], "summary,cst", "--out", "ev", "--cache-dir", "afile/cache", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["cst"]
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "embedding cache not written: afile/cache" in warnings[0]
    assert (here / "afile").read_text() == "the user's file\n"


# --------------------------------------------------------------------------- printed literally


@pytest.mark.parametrize("name", ["x[/]", "faces[v2]", "pixels:zzz:", "[bold red]loud[/]", ":smile: [link=x]y"])
def test_error_text_is_printed_literally(here, cli, name):
    """User text goes through no rich markup and no emoji codes (`x[/]` crashed the printer,
    `faces[v2]` printed as `faces`, `pixels:zzz:` as an emoji)."""
    result = cli("data", "info", name)
    line = assert_clear(result, name)
    assert line == f"error: {name}: no such dataset folder"


def test_warnings_are_printed_literally(here, cli):
    (here / "ds" / "id_000" / "[red]bad[v2]:zzz:.png").write_bytes(b"not an image")
    result = cli("data", "info", "ds", "--skip-bad", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["skipped"][0][0] == "id_000/[red]bad[v2]:zzz:.png"
    assert "warning: skipped ds/id_000/[red]bad[v2]:zzz:.png: " in result.stderr


# --------------------------------------------------------------------------- --json on failure

JSON_CASES = [
    (("data", "info", "nowhere"), ("nowhere",)),
    (("data", "info"), ("ROOT",)),  # a missing argument: click's usage error
    (("evaluate", "--dataset", "ds", "--seed", "abc"), ("--seed", "abc")),  # a bad option value
    (("evaluate", "--dataset", "ds", "--metrics", "nosuch"), ("nosuch",)),
    (("data", "show", "ds"), ("--out",)),  # a missing option
    (("nosuch-command",), ("nosuch-command",)),
    (("--bogus",), ("--bogus",)),
    (("verify", "--pairs", "gone.csv"), ("gone.csv",)),
    (("plugins", "show", "nosuch"), ("nosuch",)),
]


@pytest.mark.parametrize("args,names", JSON_CASES, ids=[" ".join(c[0]) for c in JSON_CASES])
def test_json_failure_is_one_json_object(here, cli, args, names):
    before = snapshot(here)
    assert_clear(cli(*args, "--json"), *names, as_json=True)
    assert snapshot(here) == before


def test_usage_errors_are_one_line_without_json(here, cli):
    assert_clear(cli("evaluate", "--dataset", "ds", "--seed", "abc"), "--seed", "evaluate --help")


# --------------------------------------------------------------------------- plugins


def _metric(name: str):
    from fsbench.api import Metric, MetricResult

    return type(name.title(), (Metric,), {"name": name, "needs": frozenset(),
                                          "compute": lambda self, ctx: MetricResult(name, {"mean": 1.0})})


def _plugin(hook: str, fn) -> types.SimpleNamespace:
    import fsbench

    return types.SimpleNamespace(**{hook: fsbench.hookimpl(fn, specname=hook)})


def _raises():
    raise RuntimeError("boom\nsecond line of the plugin's own message")


@pytest.fixture
def broken_plugins(fresh_registry):
    """The installed plugins plus: one raising in a hook, two clashing on one metric name,
    one registering a class of the wrong kind."""
    from fsbench.api import Embedder

    reg = fresh_registry.Registry()
    reg.register(_plugin("fsbench_register_metrics", _raises), name="exploding")
    reg.register(_plugin("fsbench_register_embedders", _raises), name="exploding-embedder")
    reg.register(_plugin("fsbench_register_metrics", lambda: [_metric("clash")]), name="clash-a")
    reg.register(_plugin("fsbench_register_metrics", lambda: [_metric("clash")]), name="clash-b")
    imposter = type("Imposter", (Embedder,), {"name": "imposter"})
    reg.register(_plugin("fsbench_register_metrics", lambda: [imposter]), name="wrong-kind")
    fresh_registry.set_registry(reg)
    return reg


def test_a_plugin_raising_in_a_hook_is_named_and_the_others_load(here, cli, broken_plugins):
    listing = cli.json("plugins")
    errors = listing["load_errors"]
    assert len(errors) == 4 and all("\n" not in e for e in errors)
    assert "plugin 'exploding' failed in fsbench_register_metrics: boom" in errors
    assert "plugin 'exploding-embedder' failed in fsbench_register_embedders: boom" in errors
    assert any("'clash-a'" in e and "'clash-b'" in e for e in errors)
    assert any("'wrong-kind'" in e and "not a subclass of fsbench.api.Metric" in e for e in errors)
    names = {(p["kind"], p["name"]) for p in listing["plugins"]}
    assert {("metric", "summary"), ("metric", "cst"), ("embedder", "pixels")} <= names
    assert ("metric", "clash") not in names
    # unrelated commands work
    ok = cli(*EVAL[:-1], "summary,cst", "--out", "ev", "--json")
    assert ok.exit_code == 0, ok.stderr
    assert set(json.loads(ok.stdout)["metrics"]) == {"summary", "cst"}


@pytest.mark.parametrize("metric,names", [
    ("clash", ("'clash-a'", "'clash-b'", "'clash'")),  # a clash: neither side wins, both named
    ("imposter", ("'wrong-kind'", "not a subclass")),
    ("nosuch", ("'nosuch'", "plugin problem(s), see `fsbench plugins`")),
])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_broken_plugin_item_fails_only_the_command_that_uses_it(here, cli, broken_plugins, metric, names, as_json):
    before = snapshot(here)
    result = cli(*EVAL[:-1], metric, "--out", "ev", *(["--json"] if as_json else []))
    assert_clear(result, *names, as_json=as_json)
    assert snapshot(here) == before


# --------------------------------------------------------------------------- pairs outside --root


@pytest.fixture
def pairs_world(here):
    """faces/ (the --root), and a file outside it that a hostile pairs file points at."""
    write_folder(here / "faces", ids=4, per_id=3, size=16)
    shutil.copy(here / "faces/id_000/img_00.png", here / "secret.png")
    (here / "faces/link.png").symlink_to(here / "secret.png")
    return here


def _pairs_csv(path: Path, extra: list[str], n: int = 8) -> Path:
    rows = ["path_a,path_b,same"]
    for k in range(n):
        i = k % 4
        rows.append(f"id_{i:03d}/img_00.png,id_{i:03d}/img_01.png,1")
        rows.append(f"id_{i:03d}/img_02.png,id_{(i + 1) % 4:03d}/img_00.png,0")
    path.write_text("\n".join([rows[0], *extra, *rows[1:]]) + "\n")
    return path


VERIFY = ("verify", "--root", "faces", "--embedder", "pixels", "--folds", "2")


@pytest.mark.parametrize("row,shown", [
    ("../secret.png,id_000/img_00.png,0", "secret.png"),
    ("id_000/img_00.png,{abs},0", "secret.png"),
    ("link.png,id_001/img_00.png,0", "link.png"),
    ("id_000/../../secret.png,id_001/img_00.png,0", "secret.png"),
], ids=["dot-dot", "absolute", "symlink out", "dot-dot inside a name"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_pairs_leading_out_of_root_are_refused(pairs_world, cli, row, shown, as_json):
    csv = _pairs_csv(pairs_world / "pairs.csv", [row.format(abs=pairs_world / "secret.png")])
    before = snapshot(pairs_world)
    result = cli(*VERIFY, "--pairs", csv.name, *(["--json"] if as_json else []))
    assert_clear(result, "pairs.csv", shown, "outside the image root faces", "--allow-outside-root", as_json=as_json)
    assert snapshot(pairs_world) == before
    allowed = cli(*VERIFY, "--pairs", csv.name, "--allow-outside-root", "--json")
    assert allowed.exit_code == 0, allowed.stderr
    assert json.loads(allowed.stdout)["pairs"] == 17


def test_lfw_pairs_leading_out_of_root_are_refused(pairs_world, cli):
    (pairs_world / "faces/x").mkdir()
    (pairs_world / "pairs.txt").write_text("1\t1\n..\t1\t2\nid_000\t1\tid_001\t1\n")
    assert_clear(cli(*VERIFY, "--lfw-pairs", "pairs.txt"), "pairs.txt", "outside the image root faces")


def test_a_pairs_csv_without_root_may_not_leave_its_folder(pairs_world, cli):
    csv = _pairs_csv(pairs_world / "faces" / "pairs.csv", ["../secret.png,id_000/img_00.png,0"])
    assert_clear(cli("verify", "--pairs", str(csv), "--embedder", "pixels", "--folds", "2"),
                 "pairs.csv", "secret.png", "outside the image root")


def test_duplicate_and_contradictory_pairs_are_counted(pairs_world, cli):
    extra = ["id_000/img_00.png,id_000/img_01.png,1",  # listed again: 1 more duplicate of row 2
             "id_000/img_01.png,id_000/img_00.png,1",  # the same pair the other way round
             "id_001/img_00.png,id_001/img_01.png,0"]  # also listed as same: contradictory
    csv = _pairs_csv(pairs_world / "pairs.csv", extra, n=4)
    result = cli(*VERIFY, "--pairs", csv.name, "--json")
    assert result.exit_code == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert "pairs.csv: 2 duplicate pair(s)" in warnings[0]
    assert "pairs.csv: 1 contradictory pair(s)" in warnings[1]

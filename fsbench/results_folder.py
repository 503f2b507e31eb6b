"""Results folders: what a command wrote into its ``--out``, so that it is never overwritten silently.

`fsbench evaluate`, `report`, `sweep` and `benchmark fr` write their results into ``--out``
and list them in a small manifest there, ``.fsbench-results.json``: the command, its
arguments, and every file it wrote (relative paths). Running a command into a folder whose
manifest lists files that still exist is refused in one line (exit 2) naming the folder and
``--overwrite``; with ``--overwrite`` every file the previous manifest lists is removed (a
stale figure the new run would not write included) before the new ones are written, and
files fsbench did not write are left alone. An empty folder, or one holding no fsbench
results, is fine. A folder with results but no manifest (written by an older fsbench) is
recognised by its result files (`markers`) and refused as well; ``--overwrite`` then lets the
new files replace those of the same name.

A command whose results are a pure function of its settings (`benchmark fr`: trained models
keyed by data and config) passes `settings`: a re-run with the same settings continues in
the folder (reusing what it finds) instead of being refused.

Which files a command wrote is found by comparing the folder before and after it ran (name,
size, modification time, inode): figures a metric plugin writes are listed without the
plugin saying so. Folders that are caches (`cache_dirs`, such as `evaluate --generator`'s
``samples/``, keyed by the sampling request and reused) and datasets (a ``dataset.json``) are
never listed nor removed. The folder is locked (``<out>.lock``, `fsbench.data.lock`) from
`start` to `finish`, and the manifest is written even when the command fails or is
interrupted (``"complete": false``), so that ``--overwrite`` can clean up after it.

Usage::

    with ResultsFolder("evaluate", overwrite=overwrite, markers=("metrics.json",)) as folder:
        folder.check(out)   # early and cheap: refuse before any work
        ...                 # validate the inputs
        folder.start()      # lock; with --overwrite remove the previous files
        ...                 # write the results
        folder.finish()     # the manifest
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
import sys
from pathlib import Path
from typing import Any

from fsbench.errors import UsageError

__all__ = ["MANIFEST", "ResultsFolder", "read_manifest"]

MANIFEST = ".fsbench-results.json"
FORMAT = "fsbench-results-1"
_DATASET_INFO = "dataset.json"  # fsbench.data.dataset.INFO_NAME, without importing numpy


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a results folder; None when there is none. A damaged one reads as
    ``{"damaged": True, "files": []}``."""
    path = Path(folder) / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("files", []), list):
            raise ValueError("not a manifest")
    except ValueError:
        return {"damaged": True, "files": []}
    return data


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _invocation() -> tuple[list[str], dict[str, Any]]:
    """The command line and the current click command's parsed options, when run from the CLI."""
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except ImportError:  # pragma: no cover - click is a dependency
        ctx = None
    if ctx is None:
        return list(sys.argv[1:]), {}
    argv = ctx.find_root().meta.get("fsbench.args")
    return (list(argv) if argv is not None else list(sys.argv[1:])), _json_safe(dict(ctx.params))


class ResultsFolder:
    """One command's results folder; see the module docstring."""

    def __init__(self, command: str, *, overwrite: bool = False, markers: tuple[str, ...] = (),
                 cache_dirs: tuple[str, ...] = (), settings: Any = None, path: str | Path | None = None) -> None:
        self.command = command  # "evaluate", "benchmark fr", ...
        self.overwrite = overwrite
        self.markers = markers  # glob patterns of result files an older fsbench wrote without a manifest
        self.cache_dirs = cache_dirs  # glob patterns of folders (relative paths) never listed nor removed
        self.settings = _json_safe(settings)
        self.path: Path | None = Path(path) if path is not None else None
        self.previous: dict[str, Any] | None = None
        self.continued = False  # same settings as the previous run: its files are kept
        self.removed: list[str] = []  # what --overwrite removed
        self.files: list[str] = []  # what the manifest lists, once finished
        self._before: dict[str, tuple[int, ...]] | None = None
        self._lock: Any = None
        self._finished = False

    # ------------------------------------------------------------------ refusing

    def check(self, path: str | Path | None = None, *, settings: Any = None) -> None:
        """Refuse (UsageError, exit 2) a folder holding results, unless --overwrite or the same
        settings; cheap, and writes nothing. Call it before any expensive work.

        `path` is the folder when it was not given to the constructor; a folder given there
        wins (a sweep's, checked by each of its evaluations). `settings`, when only known now,
        as the constructor's. Once started, this does nothing."""
        if self._before is not None:
            return
        if settings is not None:
            self.settings = _json_safe(settings)
        if path is not None and self.path is None:
            self.path = Path(path)
        if self.path is None:
            raise ValueError("ResultsFolder.check: no folder given")
        self.previous = read_manifest(self.path) if self.path.is_dir() else None
        self.continued = False
        if not self.path.is_dir():
            return
        previous = self.previous
        if previous is not None and previous.get("damaged"):
            if not self.overwrite:
                raise UsageError(f"{self.path}: holds fsbench results with an unreadable {MANIFEST}; "
                                 "pass --overwrite to replace them, or choose another --out")
            return
        listed = self._existing(previous)
        if previous is not None and listed:
            if self.settings is not None and previous.get("settings") == self.settings and not self.overwrite:
                self.continued = True
                return
            if not self.overwrite:
                what = f"`fsbench {previous.get('command', '?')}`"
                if self.settings is not None and previous.get("command") == self.command:
                    what += " with other settings"
                state = "" if previous.get("complete", True) else ", unfinished"
                raise UsageError(f"{self.path}: holds the results of {what} ({len(listed)} files{state}); "
                                 "pass --overwrite to replace them, or choose another --out")
            return
        if previous is None and not self.overwrite:
            found = self._markers_found()
            if found:
                raise UsageError(f"{self.path}: holds fsbench results ({found[0]}); "
                                 "pass --overwrite to replace them, or choose another --out")

    def _existing(self, manifest: dict[str, Any] | None) -> list[str]:
        if not manifest:
            return []
        return [rel for rel in manifest.get("files", []) if self._safe(rel) is not None
                and os.path.lexists(self._safe(rel))]

    def _markers_found(self) -> list[str]:
        assert self.path is not None
        found: list[str] = []
        for pattern in self.markers:
            found += sorted(str(p.relative_to(self.path)) for p in self.path.glob(pattern) if p.is_file())
        return found

    def _safe(self, rel: Any) -> Path | None:
        """`rel` inside the folder (no absolute path, no `..`, no symlinked folder leading out); else None."""
        assert self.path is not None
        if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
            return None
        target = self.path / rel
        root = os.path.realpath(self.path)
        parent = os.path.realpath(target.parent)
        if parent != root and not parent.startswith(root + os.sep):
            return None
        return target

    # ------------------------------------------------------------------ writing

    def start(self) -> None:
        """Lock the folder, check it again under the lock, remove the previous results with
        --overwrite, and note what is there. Idempotent: a second call does nothing."""
        if self._before is not None:
            return
        from fsbench.data.lock import FolderLock

        assert self.path is not None, "ResultsFolder.start before check"
        if self.path.exists() and not self.path.is_dir():
            self.path.mkdir()  # FileExistsError: `--out FILE`, reported by the CLI as "... is not a folder"
        where = Path(os.path.abspath(self.path))  # `--out .`: the lock is ../NAME.lock, beside the folder
        if where.name:
            self._lock = FolderLock(where, command=f"fsbench {self.command}").acquire()
        try:
            self.check()  # again, now that no other process can write here
            if self.overwrite:
                self._remove_previous()
            self._before = self._snapshot()
        except BaseException:
            self._release()
            raise

    def _remove_previous(self) -> None:
        previous = self.previous
        if previous is None or not self.path or not self.path.is_dir():
            return
        parents: set[Path] = set()
        for rel in previous.get("files", []):
            target = self._safe(rel)
            if target is None or self._cached(rel):
                continue
            if target.is_symlink() or target.is_file():
                target.unlink()
                self.removed.append(rel)
                parents.update(p for p in target.parents if p != self.path and self.path in p.parents)
        for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only once empty: a user's file keeps its folder
            except OSError:
                pass
        (self.path / MANIFEST).unlink(missing_ok=True)

    def _cached(self, rel: str) -> bool:
        parts = Path(rel).parts
        return any(fnmatch.fnmatchcase("/".join(parts[:k]), pattern)
                   for k in range(1, len(parts)) for pattern in self.cache_dirs)

    def _snapshot(self) -> dict[str, tuple[int, ...]]:
        """Relative path -> (size, mtime_ns, inode, is_link) of every file and link, minus
        caches, datasets and the manifest."""
        out: dict[str, tuple[int, ...]] = {}
        assert self.path is not None
        if not self.path.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel_dir = os.path.relpath(dirpath, self.path)
            rel_dir = "" if rel_dir == "." else rel_dir
            keep = []
            for name in dirnames:
                rel = f"{rel_dir}/{name}" if rel_dir else name
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    filenames.append(name)  # a link to a folder (benchmark fr's mixes): an entry of its own
                elif not any(fnmatch.fnmatchcase(rel, p) for p in self.cache_dirs) \
                        and not os.path.exists(os.path.join(full, _DATASET_INFO)):
                    keep.append(name)
            dirnames[:] = keep
            for name in filenames:
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if rel == MANIFEST or name.endswith(".lock"):
                    continue
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                out[rel] = (st.st_size, st.st_mtime_ns, st.st_ino, int(os.path.islink(os.path.join(dirpath, name))))
        return out

    def finish(self, complete: bool = True) -> list[str]:
        """Write the manifest: the previous files kept (same settings) and every file written
        since `start`; release the lock. Returns the listed files."""
        if self._finished or self._before is None:
            self._release()
            return self.files
        try:
            after = self._snapshot()
            written = {rel for rel, st in after.items() if self._before.get(rel) != st}
            kept = set(self._existing(self.previous)) if self.continued else set()
            self.files = sorted((kept & set(after)) | written)
            argv, options = _invocation()
            import fsbench

            manifest = {
                "format": FORMAT,
                "command": self.command,
                "argv": argv,
                "options": options,
                **({"settings": self.settings} if self.settings is not None else {}),
                "fsbench_version": fsbench.__version__,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "complete": complete,
                "files": self.files,
            }
            assert self.path is not None
            if self.path.is_dir():
                tmp = self.path / f"{MANIFEST}.tmp-{os.getpid()}"
                tmp.write_text(json.dumps(manifest, indent=2) + "\n")
                os.replace(tmp, self.path / MANIFEST)
            self._finished = True
        finally:
            self._release()
        return self.files

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> ResultsFolder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None or self._before is None:
            self.finish()
            return
        try:  # failed or interrupted: list what it wrote, so that --overwrite can remove it
            self.finish(complete=False)
        except OSError:
            self._release()  # a full disk: the original error is the one to report

"""One writer per output folder: a lock file naming its holder.

``with folder_lock(out, command="fsbench data make ..."):`` creates ``<out>.lock`` beside the
folder (the folder itself is renamed into place at the end, so its lock cannot live inside
it) with ``O_CREAT | O_EXCL``: of two processes only one creates it. The file holds the
holder's pid, host, process start time and command line, so a refusal can say who holds it.

A lock left by a process that died (kill -9, a power cut) is taken over: on the same host
the pid no longer exists, or exists with another start time (the pid was reused). Two
processes taking over the same stale lock at once are serialised by a second O_EXCL file,
``<lock>.takeover``, so exactly one of them wins. A lock held on another host cannot be
checked from here; it is refused with the command that removes it.

Locks are re-entrant within a process (`data make` holds its folder while the writer it
calls locks it again), and `release` removes the file only while it is still this holder's.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fsbench.errors import UsageError

__all__ = ["FolderLock", "folder_lock", "live_holder", "lock_path", "rank0_folder_lock"]

LOCK_SUFFIX = ".lock"
_EMPTY_GRACE_S = 30.0  # an unreadable lock this young may be one being written right now
_held: dict[str, int] = {}  # lock file -> depth, for re-entrant use within one process


def lock_path(folder: str | Path) -> Path:
    """Where `folder`'s lock lives: ``<folder>.lock`` beside it."""
    folder = Path(folder)
    return folder.with_name(folder.name + LOCK_SUFFIX)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22, counted after the command name


def _me(command: str | None) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _start_time(os.getpid()),
        "command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _read(path: Path) -> dict[str, Any] | None:
    """The holder recorded in a lock file; None when it is absent or unreadable."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(holder: dict[str, Any]) -> bool | None:
    """True/False for a holder on this host; None when it cannot be told (another host)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    start = holder.get("start")
    return start is None or _start_time(pid) in (None, start)


def live_holder(path: Path) -> dict[str, Any] | None:
    """The holder of lock file `path` if it may still be running, else None (no lock, or stale)."""
    holder = _read(path)
    if holder is None:
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        return {"pid": "?", "host": "?", "command": "?"} if age < _EMPTY_GRACE_S else None
    return None if _alive(holder) is False else holder


def _describe(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')} (`{holder.get('command')}`, since {holder.get('since', '?')})"


class FolderLock:
    """The lock on one output folder; `acquire` raises a one-line UsageError while another
    live process holds it."""

    def __init__(self, folder: str | Path, *, command: str | None = None, path: str | Path | None = None) -> None:
        self.folder = Path(folder)
        self.path = Path(path) if path is not None else lock_path(self.folder)
        self.command = command
        self._token: dict[str, Any] | None = None

    def acquire(self) -> FolderLock:
        key = str(self.path.absolute())
        if _held.get(key):
            _held[key] += 1
            return self
        me = _me(self.command)
        for _ in range(5):
            if self._create(me):
                break
            holder = live_holder(self.path)
            if holder is not None:
                if holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
                    break  # ours already (a lock object of this process not tracked in _held)
                where = "" if _alive(holder) is not None else f" (another host: if it is gone, remove {self.path})"
                raise UsageError(f"{self.folder}: being written by {_describe(holder)}; wait for it to finish{where}")
            self._take_over(me)
        else:
            raise UsageError(f"{self.path}: could not take this lock over (other processes keep replacing it); retry")
        self._token = me
        _held[key] = 1
        return self

    def _create(self, me: dict[str, Any]) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, (json.dumps(me) + "\n").encode())
        except BaseException:  # a full disk: no half-made lock left beside the user's folder
            os.close(fd)
            _unlink(self.path)
            raise
        os.close(fd)
        return True

    def _take_over(self, me: dict[str, Any]) -> None:
        """Remove a stale lock, unless another process is doing so or a live one replaced it."""
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if live_holder(guard) is None:  # a taker that died mid-takeover
                _unlink(guard)
            else:
                time.sleep(0.05)
            return
        try:
            os.write(fd, (json.dumps(me) + "\n").encode())
            os.close(fd)
            if live_holder(self.path) is None:  # still stale now that we alone look at it
                _unlink(self.path)
        finally:
            _unlink(guard)

    def release(self) -> None:
        key = str(self.path.absolute())
        depth = _held.get(key, 0)
        if depth > 1:
            _held[key] = depth - 1
            return
        _held.pop(key, None)
        holder = _read(self.path)
        if self._token is not None and holder is not None and holder.get("pid") == self._token["pid"] \
                and holder.get("start") == self._token["start"]:
            _unlink(self.path)
        self._token = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def folder_lock(folder: str | Path, *, command: str | None = None, path: str | Path | None = None
                ) -> Iterator[FolderLock]:
    """Hold `folder`'s lock (``<folder>.lock``, or `path`) for the block; see the module docstring."""
    lock = FolderLock(folder, command=command, path=path).acquire()
    try:
        yield lock
    finally:
        lock.release()


def rank0_folder_lock(path: str | Path) -> Any:
    """`folder_lock` held by rank 0 only: under torchrun the other ranks write nothing rank 0
    has not arranged, and a refused rank 0 ends the whole job (training run folders)."""
    import contextlib

    if os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    return folder_lock(path)

"""DatasetWriter: write a FaceDataset so that a kill never leaves a half dataset behind.

Everything goes to ``<out>.partial/`` first; `finalize` writes the manifest and dataset.json
and renames the folder into place. An item counts as written only once its manifest row is
in ``manifest.jsonl`` (appended after the image and its aux files are written), so after a
kill `resume=True` skips exactly the finished items and rewrites the ones that were in
progress. Files are therefore written in place (no temporary name and rename): a file cut
short by a kill is never listed in the journal. Rows are not flushed one by one (that cost
as much as writing the row): a hard kill can lose the last few kilobytes of rows, whose
items are then simply redone on resume; `close` and `finalize` flush. Rows are journaled
with orjson (the same JSON, 15x faster than the json module, which spends its time on the
floats); a NaN goes in as null and so comes back as an empty manifest cell.

The files of an item can be written by another process (`write_item`, as the procedural
generator's workers do) and the item then `record`ed here.

The writer notes each image's size as it goes (from the array, or from the header of the
encoded bytes), so opening the finished dataset does not read every file's header again.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fsbench.data.dataset import INFO_NAME, FaceDataset, identity_folders, image_files, read_manifest_table
from fsbench.data.images import encode_image, encoded_size
from fsbench.data.lock import FolderLock
from fsbench.errors import UsageError

ROWS_NAME = "manifest.jsonl"  # append-only journal inside the .partial folder
MANIFEST_NAME = "manifest.csv"


def _check_name(kind: str, value: str) -> None:
    if not value or "/" in value or "\\" in value or value.startswith(".") or value in ("..",):
        raise UsageError(f"invalid {kind} name {value!r}: it becomes a file name")


class DatasetWriter:
    def __init__(
        self,
        out_dir: str | Path,
        *,
        resume: bool = False,
        overwrite: bool = False,
        info: dict[str, Any] | None = None,
        aux_dirs: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.out_dir = Path(out_dir)
        self.partial = self.out_dir.with_name(self.out_dir.name + ".partial")
        self.info = dict(info or {})
        self.aux_dirs = tuple(aux_dirs)
        self.overwrite = overwrite
        self._rows: dict[str, dict[str, Any]] = {}
        self._sizes: dict[str, tuple[int, int]] = {}  # (H, W) of the images this writer wrote
        self._root = str(self.partial)

        self._lock = FolderLock(self.out_dir).acquire()  # one writer per folder; released by finalize/close
        try:
            self._open(resume, overwrite)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, resume: bool, overwrite: bool) -> None:
        out_busy = self.out_dir.exists() and any(self.out_dir.iterdir())
        finished = (self.out_dir / INFO_NAME).exists()
        if out_busy and not (resume or overwrite):
            raise UsageError(
                f"{self.out_dir}: exists and is not empty; pass --resume to continue it or --overwrite to replace it"
            )
        if out_busy and not finished:  # --overwrite deletes only what fsbench wrote
            raise UsageError(f"{self.out_dir}: not an fsbench dataset (no {INFO_NAME}); fsbench will not "
                             f"{'replace' if overwrite else 'resume into'} it: choose another --out")
        if self.partial.exists() and not (resume or overwrite):
            raise UsageError(
                f"{self.partial}: holds an interrupted write; pass --resume to continue it or --overwrite to start again"
            )
        if self.partial.exists() and not _written_by_fsbench(self.partial):
            raise UsageError(f"{self.partial}: not an interrupted fsbench write (no {ROWS_NAME}); "
                             "move it away, fsbench will not touch it")
        if overwrite and self.partial.exists():
            shutil.rmtree(self.partial)
        if resume and finished and not overwrite:
            # Extending a finished dataset: the new folder starts as a copy (hard links) of
            # it, and the finished one stays readable until finalize swaps the two. A killed
            # extension resumes here and links whatever it had not linked yet.
            _link_tree(self.out_dir, self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        if resume:
            self._load_rows()
        self._journal = open(self.partial / ROWS_NAME, "ab")

    def _load_rows(self) -> None:
        """The items already written: a reopened finished dataset's (its manifest), then the
        journal's. Extending a dataset therefore renders only the new items, and after a kill
        the finished ones keep their rows."""
        done = self.partial / MANIFEST_NAME
        if done.exists():
            self._load_manifest(done)
        path = self.partial / ROWS_NAME
        if not path.exists():
            return
        text = path.read_bytes()
        for line in text.splitlines():
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the line being written when the process died
            if (self.partial / row["path"]).exists():
                self._rows[row["path"]] = row
        if text and not text.endswith(b"\n"):
            with open(path, "ab") as f:
                f.write(b"\n")  # end that cut line, or the next row would be appended to it and lost

    def _load_manifest(self, path: Path) -> None:
        # as text: written back unchanged, and identity "007" stays "007", not 7
        df = read_manifest_table(path, dtype=str, keep_default_na=False)
        for row in df.to_dict("records"):
            row = {k: v for k, v in row.items() if v != ""}  # an empty cell: a value the row never had
            if row.get("path") and (self.partial / row["path"]).exists():
                self._rows[row["path"]] = row

    # ------------------------------------------------------------------ writing

    def __len__(self) -> int:
        return len(self._rows)

    def has(self, identity: str, name: str) -> bool:
        return f"{identity}/{name}" in self._rows

    def add(
        self,
        identity: str,
        name: str,
        image: bytes | np.ndarray,
        *,
        meta: dict[str, Any] | None = None,
        aux: dict[str, tuple[str, bytes | np.ndarray]] | None = None,
    ) -> None:
        """Write one image (encoded bytes, or a uint8 array encoded by `name`'s suffix)."""
        size = write_item(self._root, identity, name, image, aux=aux, aux_dirs=self.aux_dirs)
        self.record(identity, name, size, meta=meta)

    def record(self, identity: str, name: str, size: tuple[int, int] | None, *,
               meta: dict[str, Any] | None = None) -> None:
        """Journal an item whose files `write_item` has already written under `partial`
        (in another process, say): from here on it counts as written. `size` is the
        image's (H, W), or None to have `finalize` read it from the file."""
        _check_name("identity", identity)
        _check_name("image", name)
        rel = f"{identity}/{name}"
        row = {"path": rel, "identity": identity, **(meta or {})}
        self._journal.write(orjson.dumps(row, default=_jsonable, option=orjson.OPT_APPEND_NEWLINE))
        self._rows[rel] = row
        if size is None:  # no JPEG or PNG header it could read: FaceDataset.open reads the file instead
            self._sizes.pop(rel, None)
        else:
            self._sizes[rel] = size

    # ------------------------------------------------------------------ finishing

    def finalize(self) -> FaceDataset:
        """Write manifest.csv and dataset.json, then move the folder into place atomically."""
        import fsbench

        self._journal.close()
        rows = [self._rows[k] for k in sorted(self._rows)]
        if not rows:
            raise UsageError(f"{self.out_dir}: nothing was written")
        self._drop_unrecorded_images()
        for name in (MANIFEST_NAME, INFO_NAME):  # new files, never written through to a linked original
            (self.partial / name).unlink(missing_ok=True)
        write_csv(self.partial / MANIFEST_NAME, rows)
        info = {
            **self.info,
            "aux_dirs": list(self.aux_dirs),
            "identities": len({r["identity"] for r in rows}),
            "images": len(rows),
            "fsbench_version": fsbench.__version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        (self.partial / INFO_NAME).write_text(json.dumps(info, indent=2, default=_jsonable) + "\n")
        (self.partial / ROWS_NAME).unlink()
        move_into_place(self.partial, self.out_dir)
        self._lock.release()
        return FaceDataset.open(self.out_dir, sizes=self._sizes)  # sizes of resumed items: read from disk

    def _drop_unrecorded_images(self) -> None:
        """Remove images whose row never reached the journal: written by a worker just before
        a kill, then not redone because the resumed run asked for fewer items. The dataset is
        its folder tree, so left there they would become items without a manifest row."""
        for name in identity_folders(self._root, self.aux_dirs):
            folder = f"{self._root}/{name}"
            images = image_files(folder)
            stray = [image for image in images if f"{name}/{image}" not in self._rows]
            for image in stray:
                os.unlink(f"{folder}/{image}")
            if len(stray) == len(images):  # no image left (or none ever: a kill after its mkdir)
                try:
                    os.rmdir(folder)
                except OSError:
                    pass  # other files in it: not ours to remove, and FaceDataset.open will say so

    def close(self) -> None:
        """Stop without finalizing: the .partial folder stays for a later resume."""
        if not self._journal.closed:
            self._journal.close()
        self._lock.release()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.result = self.finalize()
        else:
            self.close()


def _written_by_fsbench(partial: Path) -> bool:
    """Whether a ``.partial`` folder is one a DatasetWriter made (so it may resume or delete it)."""
    names = set(os.listdir(partial))
    return not names or bool(names & {ROWS_NAME, INFO_NAME, MANIFEST_NAME})


def _link_tree(src: Path, dst: Path) -> None:
    """Make `dst` hold every file of `src`: hard links for files in sub-folders (images, masks:
    cheap, and never written again: `_write_file` replaces a file rather than writing into it),
    copies for the top-level files (manifest, dataset.json: rewritten by finalize). Files
    already in `dst` are kept, so a killed extension picks up where it stopped."""
    dst.mkdir(parents=True, exist_ok=True)
    top = sorted(os.scandir(src), key=lambda e: e.name != INFO_NAME)  # dataset.json first: the marker
    for entry in top:
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False):
            for folder, _dirs, files in os.walk(entry.path):
                rel = Path(folder).relative_to(src)
                (dst / rel).mkdir(exist_ok=True)
                for name in files:
                    if not (dst / rel / name).exists():
                        _link_or_copy(Path(folder) / name, dst / rel / name)
        elif not target.exists():
            tmp = dst / f".{entry.name}.tmp-{os.getpid()}"
            shutil.copy2(entry.path, tmp)
            os.replace(tmp, target)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)


def write_item(
    root: str | Path,
    identity: str,
    name: str,
    image: bytes | np.ndarray,
    *,
    aux: dict[str, tuple[str, bytes | np.ndarray]] | None = None,
    aux_dirs: tuple[str, ...] = (),
) -> tuple[int, int] | None:
    """Write one item's files under `root` (a writer's `partial` folder); returns the image's
    (H, W), or None when its header cannot tell.

    A function rather than a method so that worker processes can write their own items in
    parallel (file creation costs more system time than encoding on some disks); the item
    counts as written only once the writer `record`s it, so a kill in between loses nothing.
    """
    _check_name("identity", identity)
    _check_name("image", name)
    if isinstance(image, (bytes, bytearray)):
        data, size = image, encoded_size(image)
    else:
        data, size = encode_image(image, Path(name).suffix), (int(image.shape[0]), int(image.shape[1]))
    _write_file(f"{root}/{identity}", name, data)
    for kind, (aux_name, payload) in (aux or {}).items():
        if kind not in aux_dirs:
            raise UsageError(f"aux kind {kind!r} was not declared in aux_dirs {tuple(aux_dirs)}")
        _check_name(f"{kind} file", aux_name)
        blob = payload if isinstance(payload, (bytes, bytearray)) else encode_image(payload, Path(aux_name).suffix)
        _write_file(f"{root}/{kind}/{identity}", aux_name, blob)
    return size


def _write_file(folder: str, name: str, data: bytes | bytearray) -> None:
    # os-level calls: three files an item, and Python's buffered file objects cost more
    # than the write itself. The folder is made on the first file that needs it (no
    # per-file existence check; safe when several processes race to make it).
    # O_EXCL, and a file already there (an item redone after a kill, or a hard link to the
    # finished dataset an extension started from) is unlinked first: a new file, never a
    # write through a link into the finished dataset.
    path = f"{folder}/{name}"
    try:
        fd = os.open(path, _CREATE, 0o666)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        fd = _create_anew(path)
    except FileExistsError:
        fd = _create_anew(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def move_into_place(done: str | Path, target: str | Path) -> None:
    """Rename a finished folder to `target`; an existing `target` (what --overwrite replaces)
    is swapped out first and removed only once the new folder is in place."""
    done, target = Path(done), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(done, target)
        shutil.rmtree(old)
    else:
        os.replace(done, target)


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """One CSV row per dict (a manifest: one per item), columns in the order keys first
    appear, a missing value empty; for complete rows the bytes of pandas' `to_csv(index=False)`.

    The csv module rather than pandas: `DataFrame(rows).to_csv` costs ~70 us a row, about
    as much as the main process spends on everything else an item needs, and it would
    turn a column of integers with a gap into floats."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(columns)
        out.writerows([row.get(key) for key in columns] for row in rows)  # None: an empty cell


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _create_anew(path: str) -> int:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return os.open(path, _CREATE, 0o666)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)

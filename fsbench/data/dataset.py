"""FaceDataset: an ImageFolder of faces, checked once, read many times.

Layout: ``root/<identity>/<image>``, optionally with ``manifest.csv`` (or ``.parquet``) whose
``path`` column names images relative to the root, and ``dataset.json`` describing who made
it. Any ImageFolder a user already has (a released DCFace or DigiFace folder) opens as is.

Opening checks every file's header (cheap: PIL reads only the header), so a missing,
garbage or wrongly sized image is reported before hours of embedding, naming the file.
Truncated images pass a header check; they fail when decoded, with the same kind of error.
A caller that already knows some sizes (the writer that just wrote those files) passes
them and those headers are not read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fsbench.data.images import IMAGE_SUFFIXES, image_size, read_image
from fsbench.data.loader import Batch, iter_batches
from fsbench.errors import DatasetError

MANIFEST_NAMES = ("manifest.parquet", "manifest.csv")
INFO_NAME = "dataset.json"


@dataclass(frozen=True, slots=True)
class Item:
    path: str  # relative to the dataset root, posix separators
    identity: str
    label: int


@dataclass
class FaceDataset:
    """A checked ImageFolder; `items` are in a deterministic order (identity, then file name)."""

    root: Path
    items: list[Item]
    identities: list[str]
    image_size: tuple[int, int]  # (H, W), the same for every image
    info: dict[str, Any] = field(default_factory=dict)
    manifest: Any = None  # pandas DataFrame aligned with items, or None
    skip_bad: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    _fingerprint: str | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls, root: str | Path, *, skip_bad: bool = False, sizes: Mapping[str, tuple[int, int]] | None = None
    ) -> FaceDataset:
        """Scan and check `root`; with `skip_bad`, unreadable images are left out and listed.

        `sizes` maps item paths (``identity/file``) to their known (H, W): those files are
        taken at that size instead of having their header read (the size check still applies).
        """
        sizes = sizes or {}
        root = Path(root)
        if not root.exists():
            raise DatasetError(root, "no such dataset folder")
        if not root.is_dir():
            raise DatasetError(root, "not a folder (a dataset is root/<identity>/<image>)")
        info = _read_info(root)
        excluded = set(info.get("aux_dirs", ()))
        id_names = identity_folders(root, excluded)
        if not id_names:
            raise DatasetError(root, "empty dataset: no identity folders (expected root/<identity>/<image>)")

        items: list[Item] = []
        identities: list[str] = []
        skipped: list[tuple[str, str]] = []
        size: tuple[int, int] | None = None
        first: str | None = None
        for name in id_names:
            d = root / name
            files = image_files(d)
            if not files:
                raise DatasetError(d, "identity folder has no images")
            kept = []
            for fname in files:
                rel = f"{name}/{fname}"
                hw = sizes.get(rel)
                if hw is None:
                    try:
                        hw = image_size(d / fname)
                    except DatasetError as exc:
                        if not skip_bad:
                            raise
                        skipped.append((rel, exc.problem))
                        continue
                if size is None:
                    size, first = hw, rel
                elif hw != size:
                    raise DatasetError(
                        d / fname,
                        f"image is {hw[1]}x{hw[0]} but {first} is {size[1]}x{size[0]}: "
                        "a dataset holds one image size (resize the folder first)",
                    )
                kept.append(rel)
            if not kept:
                continue  # every image of this identity was bad and skipped
            label = len(identities)
            identities.append(name)
            items.extend(Item(rel, name, label) for rel in kept)
        if not items:
            raise DatasetError(root, "no readable images")
        assert size is not None
        ds = cls(root, items, identities, size, info, None, skip_bad, skipped)
        ds.manifest = _read_manifest(root, ds)
        return ds

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.read(i), self.items[i].label

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((it.label for it in self.items), dtype=np.int64, count=len(self.items))

    @property
    def num_identities(self) -> int:
        return len(self.identities)

    def abspath(self, i: int) -> Path:
        return self.root / self.items[i].path

    def aux_path(self, kind: str, i: int, suffix: str = ".png") -> Path:
        """Where an image's companion file lives, e.g. its segmentation mask under masks/."""
        return (self.root / kind / self.items[i].path).with_suffix(suffix)

    def read(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB."""
        return read_image(self.abspath(i))

    def counts(self) -> np.ndarray:
        """Images per identity label."""
        return np.bincount(self.labels, minlength=self.num_identities)

    def fingerprint(self) -> str:
        """16 hex digits of a hash of the data itself: the key of every cache, citable in a paper.

        sha256 over, in item order (identity folders sorted, then file names), each image's
        ``relative path, identity, label, sha256 of its bytes``, then each manifest file's name
        and the sha256 of its bytes (``manifest.csv`` / ``.parquet``: the rows the folders'
        identities come with). Nothing about where or when the files are: not the root, not
        mtimes or inodes, not ``dataset.json`` (its ``created`` time differs between two
        renders of the same bytes). So a copy of the folder anywhere has the same fingerprint,
        and one changed byte of an image or manifest, or an image moved to another identity,
        changes it.

        Reading every file is the cost: for 3,000 112 px JPEGs (17 MB) on 2 busy cores, 0.34 s
        from disk (0.47 s read one by one), 0.16 s from the page cache. The per-file sha256 are
        remembered across processes by `FileDigests`, so a second call on an unchanged folder
        only stats its files (0.03 s). What is reported is always the hash of content: the
        cache only skips re-reading a file its stat shows untouched."""
        if self._fingerprint is None:
            digests = FileDigests(self.root)
            manifests = [name for name in MANIFEST_NAMES if (self.root / name).is_file()]
            shas = digests.sha256([it.path for it in self.items] + manifests)
            h = hashlib.sha256(FINGERPRINT_VERSION)
            legacy = hashlib.sha256()  # the form before manifests and identities were hashed
            for it, digest in zip(self.items, shas):
                h.update(f"{it.path}\t{it.identity}\t{it.label}\t{digest}\n".encode())
                legacy.update(f"{it.path}\t{it.label}\t{digest}\n".encode())
            for name, digest in zip(manifests, shas[len(self.items):]):
                h.update(f"{name}\t{digest}\n".encode())
            digests.save()
            self._fingerprint = h.hexdigest()[:FINGERPRINT_HEX]
            _LEGACY[self._fingerprint] = legacy.hexdigest()[:FINGERPRINT_HEX]
        return self._fingerprint

    def matches_fingerprint(self, recorded: str | None) -> bool:
        """Whether `recorded` (a run's ``data_fingerprint``, an evaluation's) names this data."""
        return same_fingerprint(recorded, self.fingerprint())

    def batches(
        self, batch_size: int = 64, workers: int | None = None, indices: Sequence[int] | None = None
    ) -> Iterator[Batch]:
        """Decoded batches in item order; see `fsbench.data.loader` for the worker processes.

        A corrupt image raises `DatasetError` naming it, or with `skip_bad` is dropped from the
        batch and appended to `skipped`.
        """
        yield from iter_batches(self, batch_size=batch_size, workers=workers, indices=indices)

    def describe(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "root": str(self.root),
            "identities": self.num_identities,
            "images": len(self),
            "image_size": list(self.image_size),
            "images_per_identity": {"min": int(counts.min()), "mean": float(counts.mean()), "max": int(counts.max())},
            "generator": self.info.get("generator"),
            "fingerprint": self.fingerprint(),
            "skipped": [list(s) for s in self.skipped],
        }


# ---------------------------------------------------------------------------- fingerprints

FINGERPRINT_VERSION = b"fsbench dataset fingerprint v2\n"
FINGERPRINT_HEX = 16  # hex digits of a fingerprint (64 bits): run.json, metrics.json, cache file names
_LEGACY: dict[str, str] = {}  # fingerprint -> the v1 form of the same data (path, label, image sha256)


def same_fingerprint(recorded: str | None, current: str) -> bool:
    """`recorded` names the data whose fingerprint is `current`: equal, or `recorded` is the v1
    form of that data (runs and evaluations made before manifests and identities were hashed
    record it; a run started then still resumes on the same folder). `current` must come from
    `FaceDataset.fingerprint()` in this process (which computes the v1 form beside it)."""
    return recorded is not None and recorded in (current, _LEGACY.get(current))


def _cache_root() -> Path:
    # fsbench.evaluation.default_cache_dir, repeated: the data layer does not import the evaluation
    return Path(os.environ.get("FSBENCH_CACHE") or Path.home() / ".cache" / "fsbench")


class FileDigests:
    """sha256 of the files of one dataset folder, remembered across processes.

    Kept in ``$FSBENCH_CACHE/fingerprints/<hash of the folder's absolute path>.json`` (never in
    the dataset folder, which may be read-only or shared, and whose files are the data), one
    entry per file: ``[size, mtime_ns, ctime_ns, inode, sha256]``. A file whose stat gives the
    same four numbers is not read again; any other is read and hashed.

    Why the cache cannot make a fingerprint lie:

    - the key is more than size + mtime: an in-place edit that keeps the size and puts the
      mtime back (``os.utime``) still moves the ctime, which no system call sets, and a file
      replaced by another (a rename over it) has another inode and ctime;
    - an entry is stored only for a file untouched for `SETTLE_NS` before hashing began, so a
      write landing in the same timestamp tick as the read (git's "racily clean" files) is
      never remembered as the old content;
    - what goes into the fingerprint is still each file's sha256: the cache only saves reading
      bytes whose stat proves them unchanged; a copy of the folder elsewhere is another path,
      hashed from its own bytes (and then gives the same fingerprint);
    - an unreadable, foreign or damaged cache file is ignored, an unwritable cache folder only
      means the next call reads the files again.
    """

    SETTLE_NS = 2_000_000_000
    FORMAT = 1
    THREADS = 4

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.absolute = os.path.abspath(self.root)
        key = hashlib.sha256(os.fsencode(self.absolute)).hexdigest()[:32]
        self.path = _cache_root() / "fingerprints" / f"{key}.json"
        self.known = self._load()
        self.seen: dict[str, list[Any]] = {}
        self.started = time.time_ns()

    def _load(self) -> dict[str, list[Any]]:
        try:
            data = orjson.loads(self.path.read_bytes())
            if data.get("format") == self.FORMAT and data.get("root") == self.absolute and isinstance(data["files"], dict):
                return data["files"]
        except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            pass
        return {}

    def sha256(self, rels: Sequence[str]) -> list[str]:
        """sha256 hex of each file of `rels` (posix, relative to the root), in order.

        Files the cache cannot vouch for are read in `THREADS` threads, a few chunks each:
        file reads and hashlib release the GIL, and reading files that are not in the page
        cache is waiting on the disk (3,000 JPEGs on 2 busy cores: 0.30 s in 4 threads, 0.45 s
        in one; no process pool, which would pickle every path and digest for no gain)."""
        base = os.fspath(self.root)
        out: list[str] = []
        misses: list[int] = []
        for i, rel in enumerate(rels):
            path = f"{base}/{rel}"
            try:
                st = os.stat(path)
            except OSError as exc:
                raise DatasetError(path, f"unreadable ({exc.strerror or exc})") from None
            entry = self.known.get(rel)
            if isinstance(entry, list) and len(entry) == 5 and isinstance(entry[4], str) \
                    and entry[:4] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]:
                self.seen[rel] = entry
                out.append(entry[4])
            else:
                misses.append(i)
                out.append("")
        paths = [f"{base}/{rels[i]}" for i in misses]
        if len(paths) >= 64 and self.THREADS > 1:  # a few large chunks: a future per file costs more than a read
            from concurrent.futures import ThreadPoolExecutor

            step = -(-len(paths) // (4 * self.THREADS))
            with ThreadPoolExecutor(self.THREADS) as pool:
                parts = pool.map(_hash_files, [paths[i : i + step] for i in range(0, len(paths), step)])
                hashed = [h for part in parts for h in part]
        else:
            hashed = _hash_files(paths)
        for i, (st, digest) in zip(misses, hashed):
            out[i] = digest
            if self.started - max(st.st_mtime_ns, st.st_ctime_ns) >= self.SETTLE_NS:
                self.seen[rels[i]] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest]
        return out

    def save(self) -> None:
        """Write the entries of the files seen (atomically); nothing when nothing changed."""
        if self.seen == self.known:
            return
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(orjson.dumps({"format": self.FORMAT, "root": self.absolute, "files": self.seen}))
            os.replace(tmp, self.path)
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass


def _hash_files(paths: list[str]) -> list[tuple[os.stat_result, str]]:
    return [_hash_file(path) for path in paths]


def _hash_file(path: str) -> tuple[os.stat_result, str]:
    """(stat of the bytes read, taken before reading them; their sha256 hex)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            return st, hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise DatasetError(path, f"unreadable ({exc.strerror or exc})") from None


def _read_info(root: Path) -> dict[str, Any]:
    path = root / INFO_NAME
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise DatasetError(path, "must hold a JSON object")
    return info


# The folder layout, in one place for the reader and the writer. os.scandir: its entries
# know file from folder without a stat per file (Path.iterdir plus is_file stats each one,
# the bulk of opening a large dataset).


def identity_folders(root: str | Path, excluded: Collection[str] = ()) -> list[str]:
    """Names of `root`'s identity folders, sorted: every folder but hidden ones (``.``, ``_``)
    and the aux folders (masks, regions, ...) named in `excluded`."""
    return _utf8_names(root, [e.name for e in os.scandir(root)
                              if e.is_dir() and not e.name.startswith((".", "_")) and e.name not in excluded])


def image_files(folder: str | Path) -> list[str]:
    """Names of the image files in an identity folder, sorted."""
    return _utf8_names(folder, [e.name for e in os.scandir(folder)
                                if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()])


def _utf8_names(folder: str | Path, names: list[str]) -> list[str]:
    """`names` sorted, refusing a name that is not valid UTF-8 (Python hands it over with
    surrogate escapes, which fail later in manifests, caches, JSON and the terminal,
    after a converter has written half a record set): one line naming the folder and the
    name's bytes, before anything is read or written."""
    for name in names:
        if not name.isascii():
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise DatasetError(folder, f"the name {os.fsencode(name)!r} is not valid UTF-8: rename it "
                                           "(fsbench records names in UTF-8 manifests and JSON)") from None
    return sorted(names)


def read_manifest_table(path: Path, **read_csv: Any):
    """A manifest file (CSV, or parquet by its suffix) as a DataFrame with a 'path' column;
    `read_csv` options go to pandas for a CSV. A bad file is a DatasetError naming it."""
    import pandas as pd

    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, **read_csv)
    except Exception as exc:  # pandas raises many types for a bad file
        raise DatasetError(path, f"unreadable manifest ({exc.__class__.__name__}: {exc})") from None
    if "path" not in df.columns:
        raise DatasetError(path, "manifest has no 'path' column")
    return df


def _read_manifest(root: Path, ds: FaceDataset):
    """The manifest aligned row-for-row with `ds.items` (rows for skipped images dropped)."""
    for name in MANIFEST_NAMES:
        path = root / name
        if not path.exists():
            continue
        # path and identity are names: "0000045" (CASIA-WebFace's style) must not become 45
        df = read_manifest_table(path, dtype={"path": str, "identity": str})
        df = df.drop_duplicates("path").set_index("path")
        on_disk = {it.path for it in ds.items} | {p for p, _ in ds.skipped}
        missing = [p for p in df.index if p not in on_disk]
        if missing:
            raise DatasetError(path, f"{len(missing)} rows name images that do not exist, e.g. {missing[0]}")
        return df.reindex([it.path for it in ds.items])
    return None

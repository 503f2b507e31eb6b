"""insightface training records (MXNet RecordIO ``.rec`` + ``.idx``), without mxnet.

CASIA-WebFace, MS1M and Glint360K are distributed as ``train.rec``/``train.idx``; DCFace's
synthetic sets too. Layout (see ../shared/REFERENCE.md):

- each record: uint32 magic 0xced7230a, uint32 ``lrecord`` (continuation flag in the top 3
  bits, length in the low 29), the payload, zero padding to a multiple of 4 bytes. When the
  payload itself holds the magic word at a 4-byte-aligned position the writer splits it
  there (flags 1 = first part, 2 = middle, 3 = last) and drops that word; readers rejoin
  the parts with the magic word between them;
- payload: header ``<IfQQ`` (flag, label, id, id2), then ``flag`` float32 labels when flag > 0,
  then the encoded image;
- the ``.idx`` maps a key to the byte offset of its record's first part;
- record 0 of an insightface face set has flag 2 and labels [id_start, id_end]: images are keys
  1 .. id_start - 1, and keys id_start .. id_end - 1 hold each identity's image range [a, b).
  Without such a header (flag 0) every key is an image; DCFace's releases add a ``list.txt``
  (``key<TAB>identity/name.jpg``) that names the identity.

`RecordReader` gives random access by key and is picklable (each process reopens the file),
so training loops can index it from DataLoader workers.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsbench.errors import DatasetError

__all__ = [
    "MAGIC",
    "RecordHeader",
    "RecordReader",
    "RecordWriter",
    "pack_record",
    "unpack_record",
    "write_face_rec",
    "side_files",
]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2: 24 bytes


@dataclass(frozen=True)
class RecordHeader:
    """`labels` holds the float32 label array when flag > 0, else the one float `label`."""

    flag: int
    label: float
    id: int
    id2: int
    labels: np.ndarray | None = None

    @property
    def first_label(self) -> float:
        """An image's identity: its (first) label."""
        return float(self.labels[0]) if self.labels is not None and len(self.labels) else self.label


def pack_record(label: float | Iterable[float], image: bytes, id: int = 0, id2: int = 0) -> bytes:
    """Header + labels + image bytes, as MXNet's ``recordio.pack`` lays them out."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return _HEADER.pack(0, float(label), id, id2) + image
    labels = np.asarray(list(label), dtype="<f4")
    return _HEADER.pack(len(labels), 0.0, id, id2) + labels.tobytes() + image


def unpack_record(payload: bytes, source: str = "record") -> tuple[RecordHeader, bytes]:
    """Inverse of `pack_record`; `source` names the record in errors."""
    if len(payload) < _HEADER.size:
        raise DatasetError(source, f"record payload of {len(payload)} bytes is shorter than its 24-byte header")
    flag, label, id_, id2 = _HEADER.unpack_from(payload)
    labels = None
    start = _HEADER.size
    if flag > 0:
        end = start + 4 * flag
        if end > len(payload):
            raise DatasetError(source, f"header promises {flag} labels but the record ends first")
        labels = np.frombuffer(payload, dtype="<f4", count=flag, offset=start).copy()
        start = end
    return RecordHeader(flag, label, id_, id2, labels), payload[start:]


def _image_suffix(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    return ".jpg"  # insightface packs are JPEG; decoding will say if it is not


class RecordReader:
    """Random access to a ``.rec`` through its ``.idx``.

    ``image_keys`` lists the keys that hold images, by the header variant found in record 0;
    `identity_of(key, header)` names each image's identity (list.txt's folder when present, else the
    zero-padded integer label).
    """

    def __init__(self, rec: str | Path, idx: str | Path | None = None, list_txt: str | Path | None = None) -> None:
        self.rec = Path(rec)
        self.idx = Path(idx) if idx is not None else self.rec.with_suffix(".idx")
        if not self.rec.is_file():
            raise DatasetError(self.rec, "no such .rec file")
        if not self.idx.is_file():
            raise DatasetError(self.idx, f"missing index: {self.rec.name} needs its .idx beside it for random access")
        self.size = self.rec.stat().st_size
        self.offsets = self._read_idx()
        self._fh = None
        if list_txt is None:  # this record set's own list first, then DCFace's shared list.txt
            own = side_files(self.rec)["list"]
            list_txt = own if own.is_file() else self.rec.with_name("list.txt")
        list_txt = Path(list_txt)
        self.list_path = list_txt  # the list file that names identities (it may not exist)
        self.renamed = 0  # list.txt lines whose name repeated an earlier one (see _read_list)
        self.names = self._read_list(list_txt) if list_txt.is_file() else None
        self._ranges: dict[int, tuple[int, int]] | None = None
        self._layout()

    # ------------------------------------------------------------------ opening

    def _read_idx(self) -> dict[int, int]:
        offsets: dict[int, int] = {}
        with open(self.idx, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    key, off = int(parts[0]), int(parts[1])
                except (ValueError, IndexError):
                    raise DatasetError(self.idx, f"line {lineno}: expected 'key<TAB>offset', got {line.strip()!r}") from None
                if not 0 <= off < self.size:
                    raise DatasetError(self.idx, f"line {lineno}: offset {off} is outside {self.rec.name} ({self.size} bytes)")
                offsets[key] = off
        if not offsets:
            raise DatasetError(self.idx, "empty index")
        return offsets

    def _read_list(self, path: Path) -> dict[int, str]:
        """DCFace's list.txt: key<TAB>identity/name.jpg.

        Two lines naming the same identity/name would write one file over the other; the
        later ones keep their image under ``<name>_k<key><suffix>`` and are counted in
        `renamed`, so a convert reports them rather than silently keeping one image."""
        names: dict[int, str] = {}
        seen: set[tuple[str, str]] = set()
        self.renamed = 0
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 2 or "/" not in parts[1]:
                    raise DatasetError(path, f"line {lineno}: expected 'key<TAB>identity/name.jpg', got {line.strip()!r}")
                try:
                    key = int(parts[0])
                except ValueError:
                    raise DatasetError(path, f"line {lineno}: key {parts[0]!r} is not an integer") from None
                identity, _, name = parts[1].strip().partition("/")
                name = name.replace("/", "_")
                if (identity, name) in seen:
                    stem, suffix = os.path.splitext(name)
                    name = f"{stem}_k{key}{suffix}"
                    while (identity, name) in seen:
                        name = f"{stem}_k{key}_{len(seen)}{suffix}"
                    self.renamed += 1
                seen.add((identity, name))
                names[key] = f"{identity}/{name}"
        return names

    def _layout(self) -> None:
        """Which keys are images: record 0's header decides (flag 2 range header or not)."""
        keys = sorted(self.offsets)
        self.header0: tuple[int, int] | None = None
        if 0 in self.offsets:
            head, _ = self.read(0)
            if head.flag == 2 and head.labels is not None:
                start, end = self._header_range(head.labels)
                self.header0 = (start, end)
                self.image_keys = list(range(1, start))
                missing = [k for k in self.image_keys if k not in self.offsets]
                if missing:
                    raise DatasetError(self.idx, f"record 0 says images are keys 1..{start - 1} but key {missing[0]} "
                                                 f"is not indexed ({len(missing)} missing)")
                return
        self.image_keys = keys

    def _header_range(self, labels: np.ndarray) -> tuple[int, int]:
        """Record 0's [id_start, id_end), checked against the index before any list of keys
        is built: a crafted header of [1e9, 1e9 + 100) would otherwise allocate gigabytes."""
        a, b = (float(x) for x in labels[:2])
        shown = f"[{labels[0]!r}, {labels[1]!r})"
        if not (np.isfinite(a) and np.isfinite(b) and a == int(a) and b == int(b)):
            raise DatasetError(self.rec, f"record 0 gives identity range {shown}: not whole numbers, not a valid header")
        start, end = int(a), int(b)
        if not 1 <= start <= end:
            raise DatasetError(self.rec, f"record 0 gives identity range [{start}, {end}), not a valid header")
        n = len(self.offsets)
        if start - 1 > n or end - start > n:
            raise DatasetError(self.rec, f"record 0 declares {start - 1} images and {end - start} identities, but "
                                         f"{self.idx.name} indexes only {n} records: a corrupt or crafted header")
        return start, end

    def identity_ranges(self) -> dict[int, tuple[int, int]]:
        """label -> [a, b) image key range, from the identity records of a flag-2 header
        (empty for the flag-0 variant)."""
        if self._ranges is None:
            ranges = {}
            if self.header0 is not None:
                for k, key in enumerate(range(*self.header0)):
                    if key in self.offsets:
                        head, _ = self.read(key)
                        if head.labels is not None and len(head.labels) >= 2:
                            a, b = float(head.labels[0]), float(head.labels[1])
                            if not (np.isfinite(a) and np.isfinite(b) and 1 <= a <= b <= self.header0[0]):
                                raise DatasetError(self.rec, f"identity record {key} gives image range "
                                                             f"[{a!r}, {b!r}), outside keys 1..{self.header0[0] - 1}")
                            ranges[k] = (int(a), int(b))
            self._ranges = ranges
        return self._ranges

    # ------------------------------------------------------------------ records

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fh"] = None  # each process opens its own handle
        return state

    def _file(self):
        if self._fh is None:
            self._fh = open(self.rec, "rb")
        return self._fh

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _read_exact(self, fh, n: int, offset: int, what: str) -> bytes:
        data = fh.read(n)
        if len(data) != n:
            raise DatasetError(self.rec, f"truncated {what} at byte offset {offset}: needs {n} bytes, "
                                         f"the file ends after {len(data)}")
        return data

    def read_payload_at(self, offset: int) -> bytes:
        """The full payload of the record starting at `offset`, continuation parts rejoined."""
        fh = self._file()
        fh.seek(offset)
        parts: list[bytes] = []
        pos = offset
        while True:
            head = self._read_exact(fh, 8, pos, "record header")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise DatasetError(self.rec, f"bad magic 0x{magic:08x} at byte offset {pos} (expected 0x{MAGIC:08x}): "
                                             "corrupt record or wrong .idx")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if pos + 8 + length > self.size:  # checked before reading: no buffer for a false length
                raise DatasetError(self.rec, f"truncated record payload at byte offset {pos + 8}: needs {length} "
                                             f"bytes, the file ends after {max(self.size - pos - 8, 0)}")
            expect_first = not parts
            if expect_first and cflag not in (0, 1):
                raise DatasetError(self.rec, f"record at byte offset {pos} starts with continuation flag {cflag}: "
                                             "the .idx points into the middle of a split record")
            if not expect_first and cflag not in (2, 3):
                raise DatasetError(self.rec, f"split record broken at byte offset {pos}: continuation flag {cflag}, "
                                             "expected 2 or 3")
            parts.append(self._read_exact(fh, length, pos + 8, "record payload"))
            pad = (-length) % 4
            if pad:
                fh.seek(pad, os.SEEK_CUR)
            pos += 8 + length + pad
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)

    def read(self, key: int) -> tuple[RecordHeader, bytes]:
        """(header, image bytes) of record `key`."""
        try:
            offset = self.offsets[key]
        except KeyError:
            raise DatasetError(self.idx, f"no record with key {key}") from None
        return unpack_record(self.read_payload_at(offset), f"{self.rec} (key {key}, byte offset {offset})")

    # ------------------------------------------------------------------ images

    def __len__(self) -> int:
        return len(self.image_keys)

    def _label_of(self, key: int, header: RecordHeader) -> int:
        label = header.first_label
        if not (np.isfinite(label) and 0 <= label < 2**53):
            raise DatasetError(self.rec, f"record {key} has label {label!r}: not an identity number")
        return int(label)

    def label(self, key: int) -> int:
        return self._label_of(key, self.read(key)[0])

    def identity_of(self, key: int, header: RecordHeader) -> tuple[str, str]:
        """(identity, file name) of an image record: list.txt when present, else its label."""
        if self.names is not None and key in self.names:
            identity, _, name = self.names[key].partition("/")
            return identity, name
        return f"{self._label_of(key, header):06d}", f"{key:08d}"

    def items(self) -> Iterator[tuple[str, str, bytes]]:
        """(identity, file name, encoded image) for every image, in key order."""
        for key in self.image_keys:
            header, image = self.read(key)
            identity, name = self.identity_of(key, header)
            if not Path(name).suffix:
                name += _image_suffix(image)
            yield identity, name, image


class RecordWriter:
    """Writes a ``.rec`` + ``.idx`` pair under temporary names; `close` renames both into place."""

    def __init__(self, rec: str | Path, idx: str | Path | None = None) -> None:
        self.rec = Path(rec)
        self.idx = Path(idx) if idx is not None else self.rec.with_suffix(".idx")
        self.rec.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_rec = self.rec.with_name(f".{self.rec.name}.{os.getpid()}.tmp")
        self._tmp_idx = self.idx.with_name(f".{self.idx.name}.{os.getpid()}.tmp")
        self._rec = open(self._tmp_rec, "wb")
        self._idx = open(self._tmp_idx, "w")
        self._pos = 0

    def write(self, key: int, payload: bytes) -> None:
        """One record; split at 4-byte-aligned magic words as MXNet's writer does."""
        self._idx.write(f"{key}\t{self._pos}\n")
        n = len(payload)
        start = 0
        for i in range(0, n - n % 4, 4):
            if payload[i:i + 4] == _MAGIC_BYTES:
                self._part(1 if start == 0 else 2, payload[start:i])
                start = i + 4
        self._part(3 if start else 0, payload[start:])

    def _part(self, cflag: int, data: bytes) -> None:
        pad = (-len(data)) % 4
        self._rec.write(struct.pack("<II", MAGIC, (cflag << 29) | len(data)) + data + b"\0" * pad)
        self._pos += 8 + len(data) + pad

    def close(self) -> None:
        self._rec.close()
        self._idx.close()
        os.replace(self._tmp_rec, self.rec)
        os.replace(self._tmp_idx, self.idx)

    def abort(self) -> None:
        for fh, tmp in ((self._rec, self._tmp_rec), (self._idx, self._tmp_idx)):
            fh.close()
            if tmp.exists():
                tmp.unlink()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def side_files(rec: str | Path) -> dict[str, Path]:
    """The files of one record set: the .rec, its .idx, the list (key<TAB>identity/name) and
    the property file ("classes,H,W"). ``train.rec`` is insightface's folder layout, whose
    side files are ``property`` and ``list.txt``; any other ``NAME.rec`` owns ``NAME.idx``,
    ``NAME.list.txt`` and ``NAME.property``, so two record sets in one folder never share
    (or overwrite) a side file."""
    rec = Path(rec)
    if rec.name == "train.rec":
        return {"rec": rec, "idx": rec.with_suffix(".idx"), "list": rec.with_name("list.txt"),
                "property": rec.with_name("property")}
    return {"rec": rec, "idx": rec.with_suffix(".idx"), "list": rec.with_name(rec.stem + ".list.txt"),
            "property": rec.with_name(rec.stem + ".property")}


def write_face_rec(rec: str | Path, items: Iterable[tuple[int, str, bytes]], identities: list[str],
                   image_size: tuple[int, int] = (112, 112)) -> int:
    """Write an insightface face set: items (label, name, image bytes) grouped by label.

    Layout: record 0 = header (flag 2, [id_start, id_end]); keys 1..N the images in label
    order; keys id_start.. one record per identity with its [a, b) image range. Beside it
    (`side_files`): the property file ("classes,H,W" as insightface ships) and the list
    (key<TAB>identity/name) so identity and file names survive a round trip. Returns the
    number of images. The caller decides whether existing files may be replaced.
    """
    rec = Path(rec)
    rows = sorted(items, key=lambda r: r[0])  # stable: order within an identity is kept
    if not rows:
        raise DatasetError(rec, "nothing to write: no images")
    n = len(rows)
    id_start = n + 1
    labels = [r[0] for r in rows]
    present = sorted(set(labels))
    if present != list(range(len(present))):
        raise DatasetError(rec, "labels must run 0..K-1 without gaps to form insightface identity ranges")
    id_end = id_start + len(present)
    with RecordWriter(rec) as w:
        w.write(0, pack_record([float(id_start), float(id_end)], b""))
        for key, (label, _, image) in enumerate(rows, start=1):
            w.write(key, pack_record(float(label), image, id=key))
        bounds = np.searchsorted(labels, np.arange(len(present) + 1)) + 1  # image key range per label
        for label in present:
            w.write(id_start + label, pack_record([float(bounds[label]), float(bounds[label + 1])], b""))
    sides = side_files(rec)
    for kind, text in (("property", f"{len(present)},{image_size[0]},{image_size[1]}\n"),
                       ("list", "".join(f"{key}\t{identities[label]}/{name}\n"
                                        for key, (label, name, _) in enumerate(rows, start=1)))):
        tmp = rec.parent / f".{sides[kind].name}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, sides[kind])
    return n

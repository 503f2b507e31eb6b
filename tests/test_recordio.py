"""insightface .rec/.idx: records built byte by byte from the format description, both header
variants, split records, the writer, corruption, and `fsbench data convert`."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from fsbench.data.recordio import RecordReader, RecordWriter, write_face_rec
from fsbench.errors import DatasetError

MAGIC = struct.pack("<I", 0xCED7230A)


def part(data: bytes, cflag: int = 0) -> bytes:
    """One on-disk record part: magic, lrecord (flag << 29 | length), data, zero pad to 4."""
    return MAGIC + struct.pack("<I", (cflag << 29) | len(data)) + data + b"\0" * (-len(data) % 4)


def payload(label, image: bytes, flag_labels=None, id_=0) -> bytes:
    """IRHeader <IfQQ, then float32 labels when flag > 0, then the image."""
    if flag_labels is None:
        return struct.pack("<IfQQ", 0, label, id_, 0) + image
    return struct.pack("<IfQQ", len(flag_labels), 0.0, id_, 0) + struct.pack(f"<{len(flag_labels)}f", *flag_labels) + image


def build(tmp_path, records: list[tuple[int, bytes]], name="train"):
    """Write raw records; returns (rec path, {key: offset})."""
    blob, offsets = b"", {}
    for key, raw in records:
        offsets[key] = len(blob)
        blob += raw
    rec = tmp_path / f"{name}.rec"
    rec.write_bytes(blob)
    (tmp_path / f"{name}.idx").write_text("".join(f"{k}\t{o}\n" for k, o in offsets.items()))
    return rec, offsets


# An "image" with the magic word at payload offsets 24+8=32 and 24+16=40 (both 4-aligned):
# the writer must split its record in three.
IMG_SPLIT = b"\xff\xd8\xff\xe0ABCD" + MAGIC + b"EFGH" + MAGIC + b"tail!"
IMG_PLAIN = b"\xff\xd8\xff\xe0plain-jpeg"


def split_record(p: bytes) -> bytes:
    i = p.index(MAGIC)
    j = p.index(MAGIC, i + 4)
    return part(p[:i], 1) + part(p[i + 4:j], 2) + part(p[j + 4:], 3)


def test_insightface_header_variant_with_split_record(tmp_path):
    p2 = payload(1.0, IMG_SPLIT, id_=2)
    assert p2.index(MAGIC) % 4 == 0
    records = [
        (0, part(payload(None, b"", flag_labels=[3.0, 5.0]))),  # images 1..2, identities 3..4
        (1, part(payload(0.0, IMG_PLAIN, id_=1))),
        (2, split_record(p2)),
        (3, part(payload(None, b"", flag_labels=[1.0, 2.0]))),
        (4, part(payload(None, b"", flag_labels=[2.0, 3.0]))),
    ]
    rec, offsets = build(tmp_path, records)
    r = RecordReader(rec)
    assert r.header0 == (3, 5) and r.image_keys == [1, 2] and len(r) == 2
    head, img = r.read(2)
    assert img == IMG_SPLIT and head.label == 1.0 and head.id == 2 and r.label(2) == 1
    assert r.read(1)[1] == IMG_PLAIN
    assert r.identity_ranges() == {0: (1, 2), 1: (2, 3)}
    assert list(r.items()) == [("000000", "00000001.jpg", IMG_PLAIN), ("000001", "00000002.jpg", IMG_SPLIT)]
    # random access in any order, and a pickled reader (DataLoader workers) reopens the file
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.read(2)[1] == IMG_SPLIT and r2.read(1)[1] == IMG_PLAIN
    # a label array (flag > 0) on an image: identity = first label
    rec_b, _ = build(tmp_path, [(5, part(payload(None, IMG_PLAIN, flag_labels=[7.0, 0.5])))], name="multi")
    assert RecordReader(rec_b).items().__next__()[0] == "000007"


def test_writer_bytes_match_the_format(tmp_path):
    """RecordWriter output is byte-identical to the hand-built layout (split included)."""
    p1, p2 = payload(0.0, IMG_PLAIN, id_=1), payload(1.0, IMG_SPLIT, id_=2)
    with RecordWriter(tmp_path / "w.rec") as w:
        w.write(1, p1)
        w.write(2, p2)
    assert (tmp_path / "w.rec").read_bytes() == part(p1) + split_record(p2)
    assert (tmp_path / "w.idx").read_text() == f"1\t0\n2\t{len(part(p1))}\n"
    # a magic word at an unaligned position is not split
    p3 = payload(0.0, b"xy" + MAGIC + b"z")
    with RecordWriter(tmp_path / "u.rec") as w:
        w.write(0, p3)
    assert (tmp_path / "u.rec").read_bytes() == part(p3)
    assert not list(tmp_path.glob(".*tmp"))


def test_dcface_variant_with_list_txt(tmp_path):
    records = [(k, part(payload(0.0, IMG_PLAIN + bytes([k])))) for k in range(3)]  # header label 0 everywhere
    rec, _ = build(tmp_path, records)
    (tmp_path / "list.txt").write_text("0\t12/0.jpg\n1\t12/1.jpg\n2\t40/0.jpg\n")
    r = RecordReader(rec)
    assert r.header0 is None and r.image_keys == [0, 1, 2]
    assert [(i, n) for i, n, _ in r.items()] == [("12", "0.jpg"), ("12", "1.jpg"), ("40", "0.jpg")]
    assert list(r.items())[2][2] == IMG_PLAIN + b"\x02"
    (tmp_path / "list.txt").unlink()
    assert [i for i, _, _ in RecordReader(rec).items()] == ["000000"] * 3  # flag 0, no list: label


def test_round_trip_writer_reader(tmp_path):
    rng = np.random.default_rng(0)
    blobs = [b"\xff\xd8\xff" + rng.bytes(int(rng.integers(5, 60))) + MAGIC * int(k % 2) for k in range(9)]
    items = [(k % 3, f"img{k}.jpg", b) for k, b in enumerate(blobs)]
    n = write_face_rec(tmp_path / "train.rec", items, ["ann", "bob", "cy"])
    assert n == 9
    r = RecordReader(tmp_path / "train.rec")
    assert r.header0 == (10, 13) and len(r) == 9
    got = list(r.items())
    want = sorted(((["ann", "bob", "cy"][lab], name, b) for lab, name, b in items), key=lambda t: t[0])
    assert got == want
    assert r.identity_ranges() == {0: (1, 4), 1: (4, 7), 2: (7, 10)}
    assert (tmp_path / "property").read_text() == "3,112,112\n"


def test_corrupt_records(tmp_path):
    p1 = payload(0.0, IMG_PLAIN)
    good = part(p1)
    rec, _ = build(tmp_path, [(0, good), (1, b"\x00\x11\x22\x33" + good[4:])])
    with pytest.raises(DatasetError, match=rf"bad magic 0x33221100 at byte offset {len(good)}"):
        RecordReader(rec).read(1)
    rec, _ = build(tmp_path, [(0, good), (1, good[:20])], name="trunc")
    with pytest.raises(DatasetError, match=rf"trunc\.rec: truncated record payload at byte offset {len(good) + 8}"):
        RecordReader(rec).read(1)
    # a split record cut after its first part (8 + 32 bytes): the continuation header is missing
    rec, _ = build(tmp_path, [(0, split_record(payload(0.0, IMG_SPLIT))[:40])], name="cut")
    with pytest.raises(DatasetError, match="truncated record header at byte offset 40"):
        RecordReader(rec).read(0)
    (tmp_path / "noidx.rec").write_bytes(good)
    with pytest.raises(DatasetError, match=r"noidx\.idx: missing index"):
        RecordReader(tmp_path / "noidx.rec")
    rec, _ = build(tmp_path, [(0, good)], name="far")
    (tmp_path / "far.idx").write_text("0\t0\n1\t9999\n")
    with pytest.raises(DatasetError, match="offset 9999 is outside"):
        RecordReader(rec)


# --------------------------------------------------------------------------- format + command


def _folder(root):
    from fsbench.data import DatasetWriter

    rng = np.random.default_rng(1)
    with DatasetWriter(root) as w:
        for ident in ("alice", "bob"):
            for k in range(3):
                w.add(ident, f"{k}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))


def _run(args):
    from fsbench.cli import get_cli

    return CliRunner().invoke(get_cli(), args, catch_exceptions=False)


def test_format_plugin_and_convert(tmp_path):
    from fsbench.data import FaceDataset
    from fsbench.plugins.formats import RecFormat

    _folder(tmp_path / "faces")
    r = _run(["data", "convert", str(tmp_path / "faces"), str(tmp_path / "recs"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images"] == 6
    assert RecFormat.sniff(tmp_path / "recs") and RecFormat.sniff(tmp_path / "recs" / "train.rec")
    assert not RecFormat.sniff(tmp_path / "faces")
    r = _run(["data", "convert", str(tmp_path / "recs"), str(tmp_path / "back"), "--json"])
    assert r.exit_code == 0, r.output
    a, b = FaceDataset.open(tmp_path / "faces"), FaceDataset.open(tmp_path / "back")
    assert [i.path for i in a.items] == [i.path for i in b.items]
    assert all(a.abspath(i).read_bytes() == b.abspath(i).read_bytes() for i in range(len(a)))
    r = _run(["data", "convert", str(tmp_path / "faces"), str(tmp_path / "recs")])
    assert r.exit_code == 2 and "--overwrite" in r.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.rec").write_bytes(b"\x00" * 16)
    (tmp_path / "bad" / "train.idx").write_text("0\t0\n")
    r = _run(["data", "convert", str(tmp_path / "bad"), str(tmp_path / "out")])
    assert r.exit_code == 2 and "bad magic" in r.stderr and "byte offset 0" in r.stderr

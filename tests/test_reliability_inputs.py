"""Hostile and foreign inputs (issue 19, "No input crashes or exhausts the machine" and "Also").

Every refusal is asserted as the user sees it: exit code 2, one line on stderr naming the file
or the option, no traceback. Memory bombs are refused from their headers, before anything is
allocated or decoded: the tests check that the decoder is never reached, or bound the peak.
"""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from conftest import write_folder
from PIL import Image
from test_recordio import build, part, payload

from fsbench.data import images as images_mod
from fsbench.data.binpack import read_bin, write_bin
from fsbench.data.images import MAX_SIDE, decode_image, image_size, read_image
from fsbench.data.recordio import RecordReader
from fsbench.errors import DatasetError


def refused(result, *needles: str) -> str:
    """Exit 2, one error line on stderr holding every needle, no traceback anywhere (a command
    may say what it is about to do first, e.g. verify names its judge)."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert len([ln for ln in result.stderr.splitlines() if ln.strip()]) <= 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def png_header(w: int, h: int, mode: int = 2) -> bytes:
    """A PNG whose IHDR declares w x h (8-bit, colour type `mode`) and whose pixel data is a
    few bytes: what a decompression bomb or a crafted header looks like on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, mode, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if PIL is asked to open anything."""
    def boom(*args, **kwargs):
        raise AssertionError("the decoder was reached")

    monkeypatch.setattr(images_mod.Image, "open", boom)


# --------------------------------------------------------------------------- 1. decoded-size limits


def test_bomb_headers_are_refused_before_decoding(no_decoding):
    for w, h in ((1, 40_000), (20_000, 20_000), (MAX_SIDE + 1, 1), (10_000, 10_000)):
        with pytest.raises(DatasetError, match=rf"pack\[image 3\]: image declares {w}x{h} pixels.*{MAX_SIDE}"):
            decode_image(png_header(w, h), "pack[image 3]")


def test_bomb_files_are_refused_by_name(tmp_path):
    # 400 Mpx: PIL's DecompressionBombError (uncaught before); 100 Mpx: its warning
    for w, h in ((20_000, 20_000), (10_000, 10_000), (1, 40_000)):
        f = tmp_path / f"bomb_{w}x{h}.png"
        f.write_bytes(png_header(w, h))
        for read in (image_size, read_image):
            with pytest.raises(DatasetError, match=rf"bomb_{w}x{h}\.png: image (declares|too large)"):
                read(f)


def test_a_240_byte_bin_of_1x40000_pixels_is_refused_unread(tmp_path, cli, no_decoding):
    bomb = png_header(1, 40_000)
    assert len(bomb) < 240
    pack = tmp_path / "bomb.bin"
    write_bin(pack, [bomb, bomb], [True])
    with pytest.raises(DatasetError, match=r"bomb\.bin\[image 0\]: image declares 1x40000 pixels"):
        read_bin(pack)
    refused(cli("verify", "--bench", pack, "--embedder", "pixels"), "bomb.bin[image 0]", "16384")


def test_extreme_aspect_ratio_is_not_resized_into_gigabytes(tmp_path, cli):
    strip = png(np.zeros((8_000, 1, 3), np.uint8))  # within the size limit, but 1 x 8,000
    pack = tmp_path / "strip.bin"
    write_bin(pack, [strip, png(np.zeros((112, 112, 3), np.uint8))], [True])
    refused(cli("verify", "--bench", pack, "--embedder", "pixels"), "strip.bin[image 0]", "1x8000")


def test_data_info_on_a_20000px_png_is_a_bad_item(tmp_path, cli):
    root = write_folder(tmp_path / "ds", ids=2, per_id=2)
    (root / "id_001" / "img_09.png").write_bytes(png_header(20_000, 20_000))
    refused(cli("data", "info", root), "img_09.png", "16384")
    result = cli("data", "info", root, "--skip-bad", "--json")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert '"id_001/img_09.png"' in result.stdout and "img_09.png" in result.stderr


# --------------------------------------------------------------------------- 2. crafted .rec headers


def _rec_with_header(tmp_path, labels, name="train"):
    img = png(np.zeros((4, 4, 3), np.uint8))
    records = [(0, part(payload(None, b"", flag_labels=labels)))]
    records += [(k, part(payload(0.0, img))) for k in range(1, 4)]
    return build(tmp_path, records, name=name)[0]


@pytest.mark.parametrize("labels, needle", [
    ([1e9, 1e9 + 100], "indexes only 4 records"),
    ([float("nan"), 5.0], "not whole numbers"),
    ([4.0, float("inf")], "not whole numbers"),
    ([2.5, 4.0], "not whole numbers"),
    ([4.0, 2.0], "not a valid header"),
])
def test_crafted_rec_headers_are_refused_before_allocating(tmp_path, cli, labels, needle):
    rec = _rec_with_header(tmp_path, labels)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=needle):
            RecordReader(rec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20  # 1e9 keys as a list would be ~36 GB
    refused(cli("data", "convert", rec, tmp_path / "out"), "train.rec", needle)
    assert not (tmp_path / "out").exists()


def test_crafted_rec_labels_and_lengths(tmp_path, cli):
    img = png(np.zeros((4, 4, 3), np.uint8))
    # an image whose identity label is NaN (flag-0 variant): named, not a traceback
    rec, _ = build(tmp_path, [(0, part(payload(float("nan"), img)))], name="nanlabel")
    refused(cli("data", "convert", rec, tmp_path / "o1"), "nanlabel.rec", "label nan")
    # an identity record whose image range is infinite
    records = [(0, part(payload(None, b"", flag_labels=[2.0, 3.0]))), (1, part(payload(0.0, img))),
               (2, part(payload(None, b"", flag_labels=[1.0, float("inf")])))]
    rec, _ = build(tmp_path, records, name="infrange")
    with pytest.raises(DatasetError, match="identity record 2 gives image range"):
        RecordReader(rec).identity_ranges()
    # a record length field of 512 MiB in a 40-byte file: refused before any buffer is made
    rec, _ = build(tmp_path, [(0, struct.pack("<II", 0xCED7230A, (1 << 29) - 1) + b"\0" * 32)], name="len")
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="truncated record payload"):
            RecordReader(rec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20


# --------------------------------------------------------------------------- 3. statistics files


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_fid_refuses_statistics_that_are_not_covariances(tmp_path, cli):
    d = 4
    good = _npz(tmp_path / "good.npz", mu=np.zeros(d), sigma=np.eye(d))
    other = _npz(tmp_path / "other.npz", mu=np.ones(d), sigma=np.eye(d))
    result = cli("fid", good, other, "--json")
    assert result.exit_code == 0, result.stderr
    assert abs(__import__("json").loads(result.stdout)["fid"] - d) < 1e-9
    # round-off: a tiny negative eigenvalue of a real covariance is accepted
    s = np.eye(d)
    s[0, 0] = -1e-9
    _npz(tmp_path / "roundoff.npz", mu=np.zeros(d), sigma=s)
    assert cli("fid", good, tmp_path / "roundoff.npz").exit_code == 0
    bad = {
        "negative": ({"mu": np.zeros(d), "sigma": -np.eye(d)}, "negative eigenvalue"),
        "nan": ({"mu": np.full(d, np.nan), "sigma": np.eye(d)}, "NaN or infinite"),
        "inf": ({"mu": np.zeros(d), "sigma": np.diag([np.inf] + [1.0] * (d - 1))}, "NaN or infinite"),
        "asym": ({"mu": np.zeros(d), "sigma": np.eye(d) + np.triu(np.ones((d, d)), 1)}, "not symmetric"),
        "shape": ({"mu": np.zeros(d), "sigma": np.eye(d + 1)}, "not a mean (d,)"),
        "flat": ({"mu": np.zeros((d, 1)), "sigma": np.eye(d)}, "not a mean (d,)"),
        "nosigma": ({"mu": np.zeros(d)}, "no 'mu' and 'sigma'"),
        "strings": ({"mu": np.array(["a"] * d), "sigma": np.eye(d)}, "expected numbers"),
    }
    for name, (arrays, needle) in bad.items():
        f = _npz(tmp_path / f"{name}.npz", **arrays)
        refused(cli("fid", good, f), f"{name}.npz", needle)
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    refused(cli("fid", good, tmp_path / "junk.npz"), "junk.npz", "not a readable .npz")


def test_fid_reads_declared_sizes_before_loading(tmp_path, cli):
    """A 1 kB npz declaring a 100,000 x 100,000 sigma (80 GB) is refused from its header."""
    def member(shape, dtype="<f8", data=b"\0" * 64) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
        return buf.getvalue() + data

    f = tmp_path / "huge.npz"
    with zipfile.ZipFile(f, "w") as zf:
        zf.writestr("mu.npy", member((100_000,)))
        zf.writestr("sigma.npy", member((100_000, 100_000)))
    good = _npz(tmp_path / "good.npz", mu=np.zeros(4), sigma=np.eye(4))
    tracemalloc.start()
    try:
        refused(cli("fid", good, f), "huge.npz", "100000-d", "16384")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20
    # an object array (a pickle inside the npz) is refused, never unpickled
    obj = tmp_path / "obj.npz"
    np.savez(obj, mu=np.array([object()] * 4, dtype=object), sigma=np.eye(4))
    refused(cli("fid", good, obj), "obj.npz", "expected numbers")


# --------------------------------------------------------------------------- 4. foreign .bin packs


IMG = png(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
IMAGE_KINDS = {
    "bytes": lambda: [IMG] * 4,
    "bytearray": lambda: [bytearray(IMG) for _ in range(4)],
    "uint8 arrays": lambda: [np.frombuffer(IMG, np.uint8).copy() for _ in range(4)],
    "object array": lambda: np.array([IMG] * 4, dtype=object),
}
FLAG_KINDS = {
    "list": lambda: [True, False],
    "0/1 ints": lambda: [1, 0],
    "numpy bool array": lambda: np.array([True, False]),
    "numpy bool scalars": lambda: [np.bool_(True), np.bool_(False)],
    "numpy int array": lambda: np.array([1, 0], dtype=np.int64),
}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_foreign_bin_packs_load(tmp_path, protocol):
    f = tmp_path / "foreign.bin"
    for images in IMAGE_KINDS.values():
        for flags in FLAG_KINDS.values():
            f.write_bytes(pickle.dumps((images(), flags()), protocol=protocol))
            assert read_bin(f) == ([IMG] * 4, [True, False])


@pytest.mark.parametrize("obj, needle", [
    (([np.zeros(8, np.float32), IMG], [True]), "image 0 is a numpy float32 array of shape (8,)"),
    (([np.zeros((2, 4), np.uint8), IMG], [True]), "image 0 is a numpy uint8 array of shape (2, 4)"),
    (([IMG, 7], [True]), "image 1 is a int"),
    (([IMG, {"a": 1}], [True]), "image 1 is a dict"),
    (([IMG, IMG], np.array([0.5])), "issame is a numpy float64 array"),
    (([IMG, IMG], ["yes"]), "issame[0] is 'yes'"),
    (({"images": [IMG]}, None), "expected a pickled 2-tuple"),
])
def test_anything_else_is_refused_by_name(tmp_path, cli, obj, needle):
    f = tmp_path / "odd.bin"
    f.write_bytes(pickle.dumps(obj if obj[1] is not None else obj[0], protocol=4))
    refused(cli("verify", "--bench", f, "--embedder", "pixels"), "odd.bin", needle)


class _Run:
    """Pickles as a call of `func(*args)`: what a hostile pack does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_the_unpickler_stays_restricted(tmp_path, cli):
    import builtins
    import os

    marker = tmp_path / "pwned"
    attacks = {
        "os.system": _Run(os.system, f"touch {marker}"),
        "builtins.eval": _Run(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": _Run(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "bytearray(int)": _Run(bytearray, 10**12),  # allowed global, refused argument: no 1 TB buffer
    }
    for name, attack in attacks.items():
        for protocol in (2, 4, 5):
            f = tmp_path / "evil.bin"
            f.write_bytes(pickle.dumps(([attack, IMG], [True]), protocol=protocol))
            line = refused(cli("verify", "--bench", f, "--embedder", "pixels"), "evil.bin", "refused to load")
            assert name.split("(")[0].split(".")[-1] in line
            assert not marker.exists()
    # numpy's reconstruction cannot be asked for an array bigger than the file holds
    raw = pickle.dumps(([np.zeros(4, np.uint8)] * 2, [True]), protocol=2)
    evil = raw.replace(b"K\x00\x85", b"J\x00\xca\x9a\x3b\x85", 1)  # _reconstruct(ndarray, (1e9,), ...)
    assert evil != raw
    (tmp_path / "big.bin").write_bytes(evil)
    with pytest.raises(DatasetError, match="refused to load"):
        read_bin(tmp_path / "big.bin")


# --------------------------------------------------------------------------- 5. numeric options


def test_numeric_options_are_refused_with_their_range(tmp_path, cli):
    root = write_folder(tmp_path / "ds", ids=2, per_id=3)
    refused(cli("data", "show", root, "--out", tmp_path / "s.png", "--per-id", "100000"), "--per-id", "1000")
    refused(cli("data", "show", root, "--out", tmp_path / "s.png", "--ids", "-1"), "--ids")
    assert not (tmp_path / "s.png").exists()
    # within range but more than the dataset has: the sheet is only as large as the data
    result = cli("data", "show", root, "--out", tmp_path / "s.png", "--per-id", "900", "--ids", "900")
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "s.png") as im:
        assert im.size == (3 * 16, 2 * 16)
    pack = tmp_path / "p.bin"
    write_bin(pack, [IMG, IMG], [True])
    refused(cli("verify", "--bench", pack, "--embedder", "pixels", "--batch-size", "-1"), "--batch-size", "1")
    refused(cli("fid", root, root, "--workers", "-1"), "--workers", "0", "256")
    refused(cli("fr", "train", "--data", root, "--run", tmp_path / "run", "-o", "input_size=100000"),
            "input_size", "1024")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- 6. also: silently wrong results


def test_rec_list_txt_with_one_name_for_every_image_keeps_every_image(tmp_path, cli):
    imgs = [png(np.full((4, 4, 3), k, np.uint8)) for k in range(24)]
    rec, _ = build(tmp_path, [(k, part(payload(0.0, im))) for k, im in enumerate(imgs)])
    (tmp_path / "list.txt").write_text("".join(f"{k}\tann/face.png\n" for k in range(24)))
    result = cli("data", "convert", rec, tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    assert '"images": 24' in result.stdout
    assert "23 of 24 lines repeat" in result.stderr
    files = sorted(p.name for p in (tmp_path / "out" / "ann").iterdir())
    assert len(files) == 24 and "face.png" in files and "face_k23.png" in files
    got = sorted(read_image(tmp_path / "out" / "ann" / name)[0, 0, 0] for name in files)
    assert got == list(range(24))  # every image, each once


def test_16_bit_pngs_keep_their_tones(tmp_path):
    ref = np.arange(256, dtype=np.uint8).reshape(16, 16)
    low = np.random.default_rng(0).integers(0, 256, ref.shape, dtype=np.uint16)
    grey16 = ref.astype(np.uint16) * 256 + low  # the 8-bit reference is the high byte
    f = tmp_path / "grey16.png"
    Image.fromarray(grey16).save(f)
    with Image.open(f) as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    out = read_image(f)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out, np.repeat(ref[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(decode_image(f.read_bytes(), "grey16"), out)
    # 48-bit RGB (cv2 writes BGR order): the high byte of each channel
    import cv2

    rgb16 = np.stack([grey16, 65535 - grey16, np.full_like(grey16, 0x8000)], axis=2)
    ok, enc = cv2.imencode(".png", rgb16[:, :, ::-1].copy())
    assert ok
    want = np.stack([ref, 255 - ref, np.full_like(ref, 0x80)], axis=2)
    np.testing.assert_array_equal(decode_image(enc.tobytes(), "rgb48"), want)

"""FaceDataset reading, the writer (atomic, resumable), and every bad input of issue 2."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fsbench.data import DatasetWriter, FaceDataset
from fsbench.errors import DatasetError, UsageError

# ----------------------------------------------------------------------------- reading


def test_items_labels_and_pixels_follow_the_folder(folder):
    root = folder(ids=3, per_id=2, size=8, seed=1)
    ds = FaceDataset.open(root)
    assert ds.identities == ["id_000", "id_001", "id_002"]
    assert [it.path for it in ds.items][:3] == ["id_000/img_00.png", "id_000/img_01.png", "id_001/img_00.png"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.image_size == (8, 8) and len(ds) == 6 and ds.counts().tolist() == [2, 2, 2]
    img, label = ds[3]
    expected = np.asarray(Image.open(root / "id_001" / "img_01.png"))
    assert label == 1 and img.dtype == np.uint8 and np.array_equal(img, expected)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_equal_per_item_reads(folder, workers):
    ds = FaceDataset.open(folder(ids=4, per_id=5, size=8))
    batches = list(ds.batches(batch_size=3, workers=workers))
    assert [len(b.index) for b in batches] == [3, 3, 3, 3, 3, 3, 2]
    images = np.concatenate([b.images for b in batches])
    assert np.array_equal(images, np.stack([ds.read(i) for i in range(len(ds))]))
    assert np.concatenate([b.labels for b in batches]).tolist() == ds.labels.tolist()


def test_fingerprint_is_stable_and_sees_changes(folder):
    root = folder(ids=2, per_id=2, size=8)
    fp = FaceDataset.open(root).fingerprint()
    assert FaceDataset.open(root).fingerprint() == fp
    path = root / "id_000" / "img_00.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    os.utime(path, ns=(1, 1))
    assert FaceDataset.open(root).fingerprint() != fp


def test_manifest_is_aligned_with_items(folder):
    root = folder(ids=2, per_id=2, size=8)
    rows = [{"path": "id_001/img_01.png", "pose": 3.0}, {"path": "id_000/img_00.png", "pose": 1.0}]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    ds = FaceDataset.open(root)
    assert ds.manifest.index.tolist() == [it.path for it in ds.items]
    assert ds.manifest["pose"].tolist()[0] == 1.0 and ds.manifest["pose"].tolist()[3] == 3.0
    assert np.isnan(ds.manifest["pose"].tolist()[1])


def test_aux_dirs_are_not_identities(folder):
    root = folder(ids=2, per_id=1, size=8)
    (root / "masks" / "id_000").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "id_000" / "img_00.png")
    (root / "dataset.json").write_text(json.dumps({"aux_dirs": ["masks"]}))
    ds = FaceDataset.open(root)
    assert ds.identities == ["id_000", "id_001"]
    assert ds.aux_path("masks", 0) == root / "masks" / "id_000" / "img_00.png"


# ----------------------------------------------------------------------------- bad input


def test_missing_and_not_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        FaceDataset.open(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        FaceDataset.open(tmp_path / "file.txt")


def test_empty_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty dataset: no identity folders"):
        FaceDataset.open(tmp_path / "empty")


def test_identity_without_images_names_the_folder(folder):
    root = folder(ids=2, per_id=1, size=8)
    (root / "id_lonely").mkdir()
    (root / "id_lonely" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError) as exc:
        FaceDataset.open(root)
    assert exc.value.path == root / "id_lonely" and exc.value.problem == "identity folder has no images"


def test_garbage_image_is_named_or_skipped(folder):
    root = folder(ids=2, per_id=2, size=8)
    bad = root / "id_001" / "img_01.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DatasetError) as exc:
        FaceDataset.open(root)
    assert exc.value.path == bad and "not an image" in exc.value.problem
    ds = FaceDataset.open(root, skip_bad=True)
    assert len(ds) == 3 and ds.skipped == [("id_001/img_01.png", "not an image (unrecognised format)")]


def test_truncated_image_fails_on_decode_or_is_skipped(folder):
    root = folder(ids=2, per_id=2, size=32, suffix=".jpg")
    bad = root / "id_000" / "img_01.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[:-300])  # headers intact, scan data cut
    ds = FaceDataset.open(root)  # headers are fine
    with pytest.raises(DatasetError) as exc:
        list(ds.batches(batch_size=2))
    assert exc.value.path == bad and exc.value.problem == "truncated image"
    ds = FaceDataset.open(root, skip_bad=True)
    kept = np.concatenate([b.index for b in ds.batches(batch_size=2, workers=2)])
    assert kept.tolist() == [0, 2, 3] and ds.skipped == [("id_000/img_01.jpg", "truncated image")]


def test_mixed_sizes_name_both_files(folder):
    root = folder(ids=2, per_id=1, size=8)
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(root / "id_001" / "img_00.png")
    with pytest.raises(DatasetError, match=r"image is 8x9 but id_000/img_00.png is 8x8"):
        FaceDataset.open(root)


def test_bad_manifest_and_info(folder):
    root = folder(ids=1, per_id=1, size=8)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json: not valid JSON"):
        FaceDataset.open(root)
    (root / "dataset.json").unlink()
    pd.DataFrame([{"path": "id_000/ghost.png"}]).to_csv(root / "manifest.csv", index=False)
    with pytest.raises(DatasetError, match="1 rows name images that do not exist, e.g. id_000/ghost.png"):
        FaceDataset.open(root)


# ----------------------------------------------------------------------------- writing


def _fill(writer: DatasetWriter, ids: range, per_id: int = 3) -> None:
    for i in ids:
        for j in range(per_id):
            if not writer.has(f"p{i}", f"{j}.png"):
                arr = np.full((8, 8, 3), i * 10 + j, np.uint8)
                aux = {"masks": (f"{j}.png", arr[..., 0])} if writer.aux_dirs else None
                writer.add(f"p{i}", f"{j}.png", arr, meta={"seed": 7, "j": j}, aux=aux)


def test_writer_is_atomic_and_records_provenance(tmp_path):
    out = tmp_path / "out"
    w = DatasetWriter(out, info={"generator": "test", "seed": 7}, aux_dirs=("masks",))
    _fill(w, range(2))
    assert not out.exists() and (tmp_path / "out.partial" / "p1" / "2.png").exists()
    ds = w.finalize()
    assert not (tmp_path / "out.partial").exists()
    assert ds.identities == ["p0", "p1"] and len(ds) == 6
    assert ds.info["generator"] == "test" and ds.info["seed"] == 7 and ds.info["images"] == 6
    assert ds.manifest["j"].tolist() == [0, 1, 2, 0, 1, 2]
    assert np.asarray(Image.open(ds.aux_path("masks", 4))).tolist() == np.full((8, 8), 11).tolist()


def test_writer_refuses_non_empty_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match="exists and is not empty; pass --resume .* or --overwrite"):
        DatasetWriter(out)
    with pytest.raises(UsageError, match="not an fsbench dataset"):
        DatasetWriter(out, resume=True)
    assert (out / "precious.txt").read_text() == "keep me"


def test_interrupted_write_resumes_to_the_same_dataset(tmp_path):
    whole = DatasetWriter(tmp_path / "whole")
    _fill(whole, range(3))
    whole.finalize()

    out = tmp_path / "out"
    w = DatasetWriter(out)
    _fill(w, range(2))
    w.close()  # the process dies here ...
    journal = tmp_path / "out.partial" / "manifest.jsonl"
    with open(journal, "a") as f:
        f.write('{"path": "p2/0.png", "ident')  # ... halfway through a journal line
    with pytest.raises(UsageError, match="holds an interrupted write"):
        DatasetWriter(out)
    resumed = DatasetWriter(out, resume=True)
    assert len(resumed) == 6 and resumed.has("p1", "2.png") and not resumed.has("p2", "0.png")
    _fill(resumed, range(3))
    ds = resumed.finalize()
    ref = FaceDataset.open(tmp_path / "whole")
    assert [it.path for it in ds.items] == [it.path for it in ref.items]
    assert all(np.array_equal(ds.read(i), ref.read(i)) for i in range(len(ds)))
    assert ds.manifest.equals(ref.manifest)


def test_resume_extends_and_overwrite_replaces(tmp_path):
    out = tmp_path / "out"
    w = DatasetWriter(out)
    _fill(w, range(1))
    w.finalize()
    w = DatasetWriter(out, resume=True)
    _fill(w, range(2))
    assert len(w.finalize()) == 6
    w = DatasetWriter(out, overwrite=True)
    _fill(w, range(5, 6))
    assert FaceDataset.open(out).identities == ["p0", "p1"]  # nothing replaced until finalize
    assert w.finalize().identities == ["p5"]


def _write_in_child(root: str, identity: str, value: int) -> tuple[int, int] | None:
    from fsbench.data import write_item

    arr = np.full((8, 8, 3), value, np.uint8)
    return write_item(root, identity, "0.png", arr, aux={"masks": ("0.png", arr[..., 0])}, aux_dirs=("masks",))


def test_items_written_by_other_processes_count_once_recorded(tmp_path):
    import multiprocessing as mp

    out = tmp_path / "out"
    w = DatasetWriter(out, aux_dirs=("masks",))
    with mp.get_context("spawn").Pool(2) as pool:  # two processes racing to make the same folders
        sizes = pool.starmap(_write_in_child, [(str(w.partial), f"p{i}", 40 + i) for i in range(4)])
    assert sizes == [(8, 8)] * 4
    w.record("p0", "0.png", sizes[0], meta={"seed": 1})
    w.record("p1", "0.png", None, meta={"seed": 1})  # size unknown: read from the file
    w.close()  # killed here: p2 and p3 were written but never recorded
    w = DatasetWriter(out, resume=True, aux_dirs=("masks",))
    assert len(w) == 2 and not w.has("p2", "0.png")
    _fill(w, range(2, 3), per_id=1)
    ds = w.finalize()
    assert ds.identities == ["p0", "p1", "p2"] and ds.image_size == (8, 8)
    assert [int(ds.read(i)[0, 0, 0]) for i in range(3)] == [40, 41, 20]  # p2 redone by the resumed writer
    assert (out / "masks" / "p1" / "0.png").exists()


def test_write_item_refuses_undeclared_aux_and_unsafe_names(tmp_path):
    from fsbench.data import write_item

    arr = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(UsageError, match="aux kind 'masks' was not declared"):
        write_item(tmp_path, "p0", "0.png", arr, aux={"masks": ("0.png", arr[..., 0])})
    with pytest.raises(UsageError, match="invalid image name"):
        write_item(tmp_path, "p0", "../0.png", arr)


def test_extending_a_finished_dataset_keeps_its_items_and_rows(tmp_path):
    out = tmp_path / "out"
    w = DatasetWriter(out)
    _fill(w, range(2))
    w.add("p1", "extra.png", np.full((8, 8, 3), 99, np.uint8), meta={"seed": 7, "note": "only here", "score": 0.1 + 0.2})
    before = w.finalize().manifest
    w = DatasetWriter(out, resume=True)
    assert len(w) == 7 and w.has("p1", "extra.png")  # reopened with its rows: nothing to redo
    w.add("p2", "0.png", np.full((8, 8, 3), 20, np.uint8), meta={"seed": 7, "j": 0})
    w.close()  # killed after reopening it ...
    w = DatasetWriter(out, resume=True)  # ... and resumed from the .partial folder
    assert len(w) == 8
    ds = w.finalize()
    assert ds.identities == ["p0", "p1", "p2"] and len(ds) == 8
    assert ds.manifest.loc[before.index].equals(before)  # old rows back unchanged, floats and gaps included
    assert ds.manifest.loc["p1/extra.png", "note"] == "only here" and pd.isna(ds.manifest.loc["p2/0.png", "note"])
    assert ds.manifest.loc["p1/extra.png", "score"] == 0.1 + 0.2  # read back to the last bit


def test_extending_keeps_numeric_looking_identities_as_names(tmp_path):
    out = tmp_path / "out"
    w = DatasetWriter(out)
    w.add("007", "0.png", np.zeros((8, 8, 3), np.uint8), meta={"code": "0123"})
    w.finalize()
    w = DatasetWriter(out, resume=True)
    w.add("008", "0.png", np.zeros((8, 8, 3), np.uint8), meta={"code": "0456"})
    ds = w.finalize()
    assert ds.info["identities"] == 2 and ds.identities == ["007", "008"]
    assert ds.manifest["identity"].tolist() == ["007", "008"]
    text = (out / "manifest.csv").read_text().splitlines()
    assert text == ["path,identity,code", "007/0.png,007,0123", "008/0.png,008,0456"]


def test_writer_refuses_unsafe_names(tmp_path):
    w = DatasetWriter(tmp_path / "out")
    with pytest.raises(UsageError, match="invalid identity name '../evil'"):
        w.add("../evil", "0.png", np.zeros((4, 4, 3), np.uint8))


def test_a_cut_journal_line_does_not_swallow_the_next_row(tmp_path):
    out = tmp_path / "out"
    w = DatasetWriter(out)
    _fill(w, range(1))
    w.close()
    with open(tmp_path / "out.partial" / "manifest.jsonl", "a") as f:
        f.write('{"path": "p1/0.png", "ident')  # killed halfway through a line
    w = DatasetWriter(out, resume=True)
    _fill(w, range(2))
    w.close()  # killed again, after finishing p1
    w = DatasetWriter(out, resume=True)
    assert len(w) == 6 and w.has("p1", "0.png")  # p1's rows were not glued to the cut line


def test_encoded_size_reads_jpeg_and_png_headers_in_memory():
    import io

    from fsbench.data.images import encoded_size

    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (17, 301), (112, 112), (300, 7)):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for mode, fmt, options in (("RGB", "JPEG", {}), ("RGB", "JPEG", {"progressive": True, "quality": 20}),
                                   ("RGB", "JPEG", {"exif": b"Exif\0\0" + bytes(64), "icc_profile": bytes(70000)}),
                                   ("L", "JPEG", {}), ("RGB", "PNG", {}), ("L", "PNG", {})):
            buf = io.BytesIO()
            Image.fromarray(rgb).convert(mode).save(buf, format=fmt, **options)
            assert encoded_size(buf.getvalue()) == (h, w) == Image.open(buf).size[::-1], (fmt, options)
    bmp = io.BytesIO()
    Image.fromarray(rgb).save(bmp, format="BMP")
    assert encoded_size(bmp.getvalue()) is None  # other formats: the caller reads the file
    assert encoded_size(b"") is encoded_size(b"\xff\xd8\xff") is encoded_size(b"not an image") is None


def test_finalize_opens_with_the_sizes_it_wrote(tmp_path, monkeypatch):
    import io

    import fsbench.data.dataset as dataset_mod

    read = []
    real = dataset_mod.image_size
    monkeypatch.setattr(dataset_mod, "image_size", lambda path: read.append(path.name) or real(path))

    def jpeg(h, w):
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (90, 20, 200)).save(buf, format="JPEG")
        return buf.getvalue()

    w = DatasetWriter(tmp_path / "out")
    w.add("a", "0.jpg", jpeg(24, 16))  # encoded bytes: size from the JPEG header
    w.add("a", "1.png", np.zeros((24, 16, 3), np.uint8))  # an array: size from its shape
    ds = w.finalize()
    assert read == [] and ds.image_size == (24, 16) and len(ds) == 2
    assert FaceDataset.open(tmp_path / "out").image_size == (24, 16) and len(read) == 2  # a plain open reads them

    # the size check still holds for sizes the writer passes on
    w = DatasetWriter(tmp_path / "mixed")
    w.add("a", "0.jpg", jpeg(24, 16))
    w.add("a", "1.jpg", jpeg(16, 24))
    with pytest.raises(DatasetError, match="image is 24x16 but a/0.jpg is 16x24"):
        w.finalize()

    # resumed items were written by an earlier process: their headers are read
    w = DatasetWriter(tmp_path / "resumed")
    w.add("a", "0.jpg", jpeg(24, 16))
    w.close()
    read.clear()
    w = DatasetWriter(tmp_path / "resumed", resume=True)
    w.add("a", "1.jpg", jpeg(24, 16))
    assert w.finalize().image_size == (24, 16) and read == ["0.jpg"]


def test_jpeg_encoding_decodes_close_to_its_input_in_colour_and_grey():
    """`encode_image(..., ".jpg")` (libjpeg-turbo via simplejpeg, 4:2:0) is a plain JPEG:
    Pillow decodes it, sizes read from its header, and a smooth image comes back within a
    few grey levels (the error shrinks as quality rises)."""
    import io

    from fsbench.data.images import encode_image, encoded_size

    y, x = np.mgrid[0:37, 0:53]
    rgb = np.stack([x * 4, y * 6, (x + y) * 2], -1).astype(np.uint8)  # smooth ramps, odd sizes
    errors = []
    for quality in (40, 95):
        data = encode_image(rgb, ".jpg", quality)
        back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
        assert back.shape == rgb.shape and encoded_size(data) == (37, 53)
        errors.append(np.abs(back - rgb).mean())
    assert errors[1] < 1.5 and errors[1] < errors[0]
    grey = (x * 4).astype(np.uint8)
    for array in (grey, grey[..., None]):
        im = Image.open(io.BytesIO(encode_image(array, ".jpeg", 90)))
        assert im.mode == "L" and np.abs(np.asarray(im).astype(int) - grey).mean() < 1.5
    assert encode_image(rgb, ".jpg", 90) == encode_image(rgb.copy(), ".jpg", 90)  # deterministic
    assert encode_image(rgb[:, ::2], ".jpg", 90)  # a strided view is made contiguous first
    with pytest.raises(ValueError, match="shape"):
        encode_image(np.zeros((8, 8, 4), np.uint8), ".jpg")


def test_manifest_matches_pandas_and_keeps_gaps_empty(tmp_path):
    """finalize writes manifest.csv with the csv module: the same bytes as pandas' to_csv for
    complete rows; a key some rows lack becomes an empty cell (and integers stay integers)."""
    from fsbench.data.writer import write_csv

    rng = np.random.default_rng(3)
    rows = [{"path": f"a/{k}.jpg", "identity": "a", "yaw": float(rng.normal() * 30), "q": int(rng.integers(35, 96)),
             "tiny": float(rng.uniform() * 1e-6), "flag": bool(k % 2), "note": 'x, "quoted"' if k == 3 else "plain"}
            for k in range(40)]
    write_csv(tmp_path / "m.csv", rows)
    assert (tmp_path / "m.csv").read_text() == pd.DataFrame(rows).to_csv(index=False)
    gappy = [{"path": "a/0.jpg", "n": 3}, {"path": "a/1.jpg", "extra": "e"}, {"path": "a/2.jpg", "n": 5, "none": None}]
    write_csv(tmp_path / "g.csv", gappy)
    assert (tmp_path / "g.csv").read_text() == "path,n,extra,none\na/0.jpg,3,,\na/1.jpg,,e,\na/2.jpg,5,,\n"

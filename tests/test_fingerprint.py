"""The dataset fingerprint is a hash of the content: the same bytes anywhere give the same
fingerprint, any changed byte, label or manifest gives another; the per-file digest cache
makes a second call cheap without ever vouching for changed bytes."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import fsbench.data.dataset as dataset_mod
from fsbench.data.dataset import FaceDataset, FileDigests, same_fingerprint


def fp(root: Path) -> str:
    return FaceDataset.open(root).fingerprint()


@pytest.fixture
def count_reads(monkeypatch):
    """How many files the fingerprint read and hashed (the rest came from the digest cache)."""
    calls: list[str] = []
    real = dataset_mod._hash_file

    def counting(path: str):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(dataset_mod, "_hash_file", counting)
    return calls


@pytest.fixture
def settled(monkeypatch):
    """Cache entries even for files written a moment ago (the tests' files all are)."""
    monkeypatch.setattr(FileDigests, "SETTLE_NS", 0)


def expected(root: Path) -> str:
    """The documented formula, computed independently of the implementation."""
    ds = FaceDataset.open(root)
    h = hashlib.sha256(b"fsbench dataset fingerprint v2\n")
    for it in ds.items:
        h.update(f"{it.path}\t{it.identity}\t{it.label}\t{hashlib.sha256((root / it.path).read_bytes()).hexdigest()}\n".encode())
    for name in ("manifest.parquet", "manifest.csv"):
        if (root / name).exists():
            h.update(f"{name}\t{hashlib.sha256((root / name).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()[:16]


def with_manifest(root: Path) -> Path:
    ds = FaceDataset.open(root)
    pd.DataFrame([{"path": it.path, "identity": it.identity, "pose": float(i)} for i, it in enumerate(ds.items)]) \
        .to_csv(root / "manifest.csv", index=False)
    return root


def test_fingerprint_is_the_documented_content_hash(folder):
    root = with_manifest(folder(ids=8, per_id=9, size=8))  # 72 files: hashed in the thread pool
    value = fp(root)
    assert len(value) == 16 and int(value, 16) >= 0
    assert value == expected(root)


def test_a_copy_elsewhere_has_the_same_fingerprint(folder, tmp_path, settled):
    root = with_manifest(folder(ids=3, per_id=3, size=8))
    value = fp(root)
    copy = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(root, copy)
    assert fp(copy) == value
    plain = tmp_path / "plain"  # shutil.copy: new mtimes and inodes too
    shutil.copytree(root, plain, copy_function=shutil.copy)
    assert fp(plain) == value


def test_touching_mtime_keeps_it(folder, settled):
    root = folder(ids=2, per_id=3, size=8)
    value = fp(root)
    for path in root.rglob("*.png"):
        os.utime(path, ns=(10**18, 10**18))
    os.utime(root / "id_000", ns=(1, 1))
    assert fp(root) == value


def test_one_changed_pixel_byte_changes_it_even_with_size_and_mtime_kept(folder, settled, count_reads):
    root = folder(ids=2, per_id=3, size=8, suffix=".bmp")  # raw pixels: one byte is one pixel channel
    value = fp(root)
    path = root / "id_001" / "img_02.bmp"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the cache's size and mtime both match
    count_reads.clear()
    changed = fp(root)
    assert changed != value and changed == expected(root)
    assert count_reads == [str(path)]  # only the edited file was read again (its ctime moved)


def test_relabelling_one_image_changes_it(folder):
    root = folder(ids=3, per_id=3, size=8)
    value = fp(root)
    (root / "id_000" / "img_02.png").rename(root / "id_001" / "img_09.png")  # same bytes, another identity
    moved = fp(root)
    assert moved != value
    (root / "id_002").rename(root / "id_009")  # the last identity renamed: same bytes and labels, another name
    assert fp(root) not in (value, moved)


def test_the_manifest_bytes_count_and_dataset_json_does_not(folder):
    root = with_manifest(folder(ids=2, per_id=3, size=8))
    value = fp(root)
    (root / "dataset.json").write_text('{"generator": "mine", "created": "today"}\n')
    assert fp(root) == value  # who made it and when: not the data
    df = pd.read_csv(root / "manifest.csv")
    df.loc[0, "pose"] = 99.0
    df.to_csv(root / "manifest.csv", index=False)
    assert fp(root) != value


def test_second_call_reads_no_file_and_the_cache_lives_outside_the_dataset(folder, tmp_path, settled, count_reads):
    root = with_manifest(folder(ids=4, per_id=20, size=8))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    value = fp(root)
    assert len(count_reads) == 81  # 80 images + manifest.csv
    count_reads.clear()
    assert fp(root) == value and count_reads == []
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written into the data
    assert list((tmp_path / "_cache" / "fingerprints").glob("*.json"))


def test_recent_files_are_not_remembered(folder, count_reads):
    """A file written in the last SETTLE_NS is hashed again next time: a write in the same
    timestamp tick as the read must not be cached as the old content."""
    root = folder(ids=2, per_id=2, size=8)
    fp(root)
    count_reads.clear()
    fp(root)
    assert len(count_reads) == 4


@pytest.mark.parametrize("damage", ["garbage", "other-root", "stale-entry", "unwritable"])
def test_a_bad_cache_never_changes_the_answer(folder, tmp_path, monkeypatch, settled, damage):
    root = folder(ids=2, per_id=3, size=8)
    value = expected(root)
    if damage == "unwritable":
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        monkeypatch.setenv("FSBENCH_CACHE", str(blocker))
        assert fp(root) == value and fp(root) == value
        return
    fp(root)
    (cache_file,) = (tmp_path / "_cache" / "fingerprints").glob("*.json")
    text = cache_file.read_text()
    wrong = text.replace(hashlib.sha256((root / "id_000" / "img_00.png").read_bytes()).hexdigest(), "0" * 64)
    if damage == "garbage":
        cache_file.write_bytes(b"\x00{not json")
    elif damage == "other-root":  # wrong digests, written for another folder: ignored
        cache_file.write_text(wrong.replace(str(root), str(root) + "-other"))
    else:  # a wrong digest whose file has been touched since: its stat no longer matches
        cache_file.write_text(wrong)
        os.utime(root / "id_000" / "img_00.png")
    assert fp(root) == value


def test_fingerprints_recorded_before_v2_still_name_the_data(folder):
    """Runs started before manifests and identities were hashed recorded the v1 form (path,
    label, image sha256): resuming them on the same folder must not be refused."""
    root = with_manifest(folder(ids=2, per_id=3, size=8))
    ds = FaceDataset.open(root)
    v1 = hashlib.sha256()
    for it in ds.items:
        v1.update(f"{it.path}\t{it.label}\t{hashlib.sha256((root / it.path).read_bytes()).hexdigest()}\n".encode())
    old = v1.hexdigest()[:16]
    assert ds.fingerprint() != old
    assert ds.matches_fingerprint(old) and ds.matches_fingerprint(ds.fingerprint())
    assert same_fingerprint(old, ds.fingerprint())
    assert not ds.matches_fingerprint("0" * 16) and not ds.matches_fingerprint(None)

    from fsbench.errors import UsageError
    from fsbench.train.loop import _check_resume

    _check_resume({"config": {}, "data_fingerprint": old}, {}, ds.fingerprint(), frozenset(), root / "checkpoint.pt")
    with pytest.raises(UsageError, match="other data"):
        _check_resume({"config": {}, "data_fingerprint": "0" * 16}, {}, ds.fingerprint(), frozenset(), root / "ckpt")


def test_embedding_cache_is_keyed_by_the_new_fingerprint(folder, tmp_path):
    from fsbench.evaluation import EvalContext
    from fsbench.plugins.embedders.pixels import PixelEmbedder

    root = folder(ids=2, per_id=2, size=8)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    cache = tmp_path / "emb"
    first = EvalContext(FaceDataset.open(root), embedder=PixelEmbedder(), cache_dir=cache).embeddings()
    (entry,) = (cache / "arrays").glob("*.npz")
    assert entry.name.startswith(fp(root) + "-")
    again = EvalContext(FaceDataset.open(copy), embedder=PixelEmbedder(), cache_dir=cache).embeddings()
    assert len(list((cache / "arrays").glob("*.npz"))) == 1  # the copy is the same data: a cache hit
    assert (first.vectors == again.vectors).all()

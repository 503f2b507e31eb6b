"""Never lose the user's data (issue 19): --overwrite deletes only what fsbench wrote, writers
never replace files they did not create, one writer per folder, `data info` checks what it
says, an interrupted extension keeps the finished dataset, caches are keyed by content.

Every refusal is checked as the user sees it: exit code 2, one line on stderr naming the
file or folder, no traceback, and nothing on disk changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fsbench.data import DatasetWriter, FaceDataset
from fsbench.data.lock import folder_lock, lock_path

ROOT = Path(__file__).resolve().parents[1]
FSBENCH = [sys.executable, "-m", "fsbench"]


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (and of `roots` that are files), by path."""
    out: dict[str, str] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def refused(result, *names: str) -> str:
    """The one stderr line of a refused command; it must name each of `names`."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for name in names:
        assert name in err, (name, err)
    return err


def make(cli, out: Path, *extra: str, ids: int = 2, per_id: int = 1):
    return cli("data", "make", "procedural", "--out", out, "--ids", ids, "--per-id", per_id, *extra)


# --------------------------------------------------------------------------- 1. --overwrite


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(cli, tmp_path):
    mine = tmp_path / "mine"
    (mine / "thesis").mkdir(parents=True)
    (mine / "thesis" / "chapter1.tex").write_text("years of work")
    before = snapshot(mine)
    for flag in ("--overwrite", "--resume"):
        refused(make(cli, mine, flag), str(mine), "not an fsbench dataset")
        assert snapshot(mine) == before
    assert not (tmp_path / "mine.partial").exists() and not lock_path(mine).exists()


def test_overwrite_replaces_a_dataset_fsbench_made(cli, tmp_path):
    out = tmp_path / "world"
    assert make(cli, out).exit_code == 0
    result = make(cli, out, "--overwrite", ids=3)
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "dataset.json").read_text())["identities"] == 3


def test_overwrite_refuses_a_partial_folder_fsbench_did_not_make(cli, tmp_path):
    out = tmp_path / "world"
    partial = tmp_path / "world.partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    refused(make(cli, out, "--overwrite"), str(partial), "not an interrupted fsbench write")
    assert (partial / "notes.txt").read_text() == "mine"


def test_sample_overwrite_refuses_a_partial_folder_it_did_not_make(cli, tmp_path):
    out = tmp_path / "syn"
    partial = tmp_path / "syn.partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    result = cli("sample", "procedural", "--out", out, "--ids", 2, "--per-id", 1, "--overwrite")
    refused(result, str(partial), "not an unfinished fsbench sampling")
    assert (partial / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- 2. side files


def test_convert_to_rec_never_replaces_files_it_did_not_create(cli, folder, tmp_path):
    a, b = folder("A", ids=2, per_id=2, seed=1), folder("B", ids=3, per_id=2, seed=2)
    for ident in (b / "id_000", b / "id_001", b / "id_002"):
        ident.rename(ident.with_name("b_" + ident.name))  # B's identities are other people
    out = tmp_path / "out"
    out.mkdir()
    (out / "list.txt").write_text("the user's list\n")
    (out / "property").write_text("the user's property\n")
    users = snapshot(out / "list.txt", out / "property")

    assert cli("data", "convert", a, out / "a.rec").exit_code == 0
    assert cli("data", "convert", b, out / "b.rec").exit_code == 0
    assert snapshot(out / "list.txt", out / "property") == users
    assert {p.name for p in out.iterdir()} == {"list.txt", "property", "a.rec", "a.idx", "a.list.txt", "a.property",
                                                "b.rec", "b.idx", "b.list.txt", "b.property"}
    assert (out / "a.property").read_text() == "2,16,16\n"

    # the first record set keeps its own labels (a shared list.txt relabelled it before)
    assert cli("data", "convert", out / "a.rec", tmp_path / "a-back").exit_code == 0
    back = FaceDataset.open(tmp_path / "a-back")
    assert back.identities == ["id_000", "id_001"]
    assert snapshot(tmp_path / "a-back" / "id_000")  # the images came back
    for i in range(len(back)):
        assert back.abspath(i).read_bytes() == (a / back.items[i].path).read_bytes()


def test_convert_refuses_to_replace_without_overwrite_and_foreign_files_with_it(cli, folder, tmp_path):
    a = folder("A", ids=2, per_id=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.list.txt").write_text("someone's list\n")  # a side file, but no a.rec: not our record set
    before = snapshot(out)
    refused(cli("data", "convert", a, out / "a.rec"), str(out / "a.list.txt"), "--overwrite")
    refused(cli("data", "convert", a, out / "a.rec", "--overwrite"), str(out / "a.list.txt"), "not a set fsbench wrote")
    assert snapshot(out) == before

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("mine")
    refused(cli("data", "convert", a, theirs, "--to", "rec", "--overwrite"), str(theirs))
    assert [p.name for p in theirs.iterdir()] == ["thesis.tex"]

    assert cli("data", "convert", a, tmp_path / "recs", "--to", "rec").exit_code == 0
    assert cli("data", "convert", a, tmp_path / "recs", "--to", "rec", "--overwrite").exit_code == 0
    assert {p.name for p in (tmp_path / "recs").iterdir()} == {"train.rec", "train.idx", "list.txt", "property"}


# --------------------------------------------------------------------------- 3. one writer per folder


@pytest.fixture
def holder():
    """Start another process that holds the lock of a folder (or a given lock file) until the test ends."""
    procs: list[subprocess.Popen] = []

    def start(folder: Path, path: Path | None = None) -> subprocess.Popen:
        code = ("import sys, time; from fsbench.data.lock import folder_lock\n"
                f"with folder_lock({str(folder)!r}, command='fsbench data make procedural --out X', "
                f"path={str(path) if path else None!r}):\n"
                "    print('held', flush=True); time.sleep(120)\n")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_writer_is_refused_naming_the_holder(cli, folder, holder, tmp_path):
    out = tmp_path / "world"
    proc = holder(out)
    err = refused(make(cli, out), str(out), f"pid {proc.pid}", "fsbench data make procedural --out X")
    assert "being written by" in err
    assert not out.exists() and not (tmp_path / "world.partial").exists()

    rec = tmp_path / "a.rec"
    holder(rec)
    refused(cli("data", "convert", folder("A", ids=2, per_id=1), rec), str(rec), "being written by")
    assert not rec.exists()

    run = tmp_path / "run"
    holder(run)
    refused(cli("fr", "train", "--data", tmp_path / "A", "--run", run), str(run), "being written by")
    assert not run.exists()


def test_a_second_generator_training_is_refused(cli, folder, holder, tmp_path, monkeypatch):
    from fsbench.registry import Registry, set_registry

    monkeypatch.setenv("FSBENCH_PLUGINS_DIR", str(Path(__file__).parent / "plugins"))  # the toy generator
    set_registry(Registry())
    try:
        run = tmp_path / "run"
        proc = holder(run)
        result = cli("train", "toy", "--data", folder("A", ids=2, per_id=2), "--run", run)
        refused(result, str(run), f"pid {proc.pid}")
        assert not run.exists()
    finally:
        set_registry(None)


def test_a_shard_being_written_is_refused_but_other_shards_are_not(cli, holder, tmp_path):
    out = tmp_path / "syn"
    partial = tmp_path / "syn.partial"
    partial.mkdir()
    proc = holder(out, partial / "journal-0-of-2.lock")
    args = ("sample", "procedural", "--out", out, "--ids", 2, "--per-id", 2)
    refused(cli(*args, "--shard", "0/2"), f"pid {proc.pid}", "shard 0/2")
    refused(cli(*args, "--shard", "1/2", "--overwrite"), str(partial), "shard 0/2", f"pid {proc.pid}")
    assert cli(*args, "--shard", "1/2").exit_code == 0  # the other shard writes alongside
    assert not out.exists()  # shard 0 has not run: the dataset is not complete


def test_a_stale_lock_from_a_dead_process_is_taken_over(cli, tmp_path):
    out = tmp_path / "world"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = lock_path(out)
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "command": "fsbench data make",
                                "start": None}) + "\n")
    result = make(cli, out)
    assert result.exit_code == 0, result.stderr
    assert FaceDataset.open(out).num_identities == 2
    assert not lock.exists()  # released at the end


def test_an_unreadable_old_lock_is_stale_a_fresh_one_is_not(tmp_path):
    out = tmp_path / "world"
    lock = lock_path(out)
    lock.write_text("")  # a holder killed between creating the file and writing it
    with pytest.raises(Exception, match="being written by"):
        with folder_lock(out):
            pass
    os.utime(lock, (time.time() - 3600,) * 2)
    with folder_lock(out):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_locks_are_reentrant_within_a_process(tmp_path):
    out = tmp_path / "world"
    with folder_lock(out):
        with folder_lock(out):
            pass
        assert lock_path(out).exists()  # the outer holder still holds it
    assert not lock_path(out).exists()


# --------------------------------------------------------------------------- 4. data info


def test_data_info_decodes_every_image(cli, folder):
    root = folder(ids=2, per_id=3, size=32, suffix=".jpg")
    bad = root / "id_001" / "img_01.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # a truncated JPEG: its header is fine
    before = snapshot(root)
    refused(cli("data", "info", root), str(bad))
    result = cli("data", "info", root, "--skip-bad", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert [p for p, _ in info["skipped"]] == ["id_001/img_01.jpg"] and info["images"] == 5
    assert str(bad) in result.stderr
    assert snapshot(root) == before


def test_data_info_checks_companion_files(cli, tmp_path):
    out = tmp_path / "world"
    assert make(cli, out, ids=2, per_id=2).exit_code == 0
    assert cli("data", "info", out).exit_code == 0
    mask = next((out / "masks").rglob("*.png"))
    mask.unlink()
    crop = sorted((out / "regions").rglob("*.jpg"))[-1]
    crop.unlink()
    err = refused(cli("data", "info", out), str(out / "masks"), "missing", "2 companion files")
    assert mask.stem in err
    result = cli("data", "info", out, "--skip-bad", "--json")
    assert result.exit_code == 0
    missing = json.loads(result.stdout)["missing_aux"]
    assert len(missing) == 2 and {m[0].split("/")[0] for m in missing} == {"masks", "regions"}
    assert result.stderr.count("missing") == 2


# --------------------------------------------------------------------------- 5. interrupted extension


def test_an_interrupted_extension_keeps_the_finished_dataset(tmp_path):
    out = tmp_path / "ds"
    rng = np.random.default_rng(0)

    def image() -> np.ndarray:
        return rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)

    with DatasetWriter(out, info={"who": "test"}) as w:
        for ident in ("a", "b"):
            w.add(ident, "0.png", image())
    before = snapshot(out)

    w = DatasetWriter(out, resume=True)
    assert w.has("a", "0.png") and len(w) == 2  # the finished items are kept, not redone
    w.add("c", "0.png", image())
    w.add("a", "0.png", image())  # rewriting an item in the extension must not write into the original
    w.close()  # killed here
    assert snapshot(out) == before
    assert len(FaceDataset.open(out)) == 2

    w = DatasetWriter(out, resume=True)  # the extension resumes
    w.add("d", "0.png", image())
    ds = w.finalize()
    assert [it.path for it in ds.items] == ["a/0.png", "b/0.png", "c/0.png", "d/0.png"]
    assert not (tmp_path / "ds.partial").exists() and not lock_path(out).exists()
    assert snapshot(out / "b") == {k: v for k, v in before.items() if "/ds/b/" in k}


def test_a_killed_data_make_extension_leaves_the_dataset_readable(cli, tmp_path):
    out = tmp_path / "world"
    assert make(cli, out, ids=2, per_id=2).exit_code == 0
    before = snapshot(out)
    journal = tmp_path / "world.partial" / "manifest.jsonl"
    proc = subprocess.Popen([*FSBENCH, "data", "make", "procedural", "--out", str(out), "--ids", "200", "--per-id",
                             "4", "--resume", "--workers", "1"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.stat().st_size > 2000:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the extension finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert snapshot(out) == before
    assert cli("data", "info", out).exit_code == 0
    result = make(cli, out, "--resume", "--workers", 1, ids=200, per_id=4)  # the killed run's lock is taken over
    assert result.exit_code == 0, result.stderr
    assert len(FaceDataset.open(out)) == 800 and not (tmp_path / "world.partial").exists()
    assert {k: v for k, v in snapshot(out).items() if k in before and not k.endswith(("manifest.csv", ".json"))} \
        == {k: v for k, v in before.items() if not k.endswith(("manifest.csv", ".json"))}


# --------------------------------------------------------------------------- 6. content fingerprints


def test_fingerprint_follows_content_not_size_and_mtime(folder, tmp_path):
    root = folder(ids=2, per_id=2, size=8)
    fp = FaceDataset.open(root).fingerprint()
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # other mtimes, same bytes: the same data
    assert FaceDataset.open(copy).fingerprint() == fp

    path = root / "id_000" / "img_00.png"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # an in-place edit that keeps the size ...
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the mtime
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert FaceDataset.open(root).fingerprint() != fp


def test_cached_embeddings_are_not_reused_after_an_in_place_edit(folder, tmp_path):
    from fsbench.evaluation import EvalContext
    from fsbench.plugins.embedders.pixels import PixelEmbedder

    root = folder(ids=2, per_id=2, size=8, suffix=".bmp")  # raw pixels: a byte changed, the size kept
    cache = tmp_path / "cache"
    first = EvalContext(FaceDataset.open(root), embedder=PixelEmbedder(), cache_dir=cache).embeddings()
    path = root / "id_001" / "img_01.bmp"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = EvalContext(FaceDataset.open(root), embedder=PixelEmbedder(), cache_dir=cache).embeddings()
    fresh = EvalContext(FaceDataset.open(root), embedder=PixelEmbedder(), use_cache=False).embeddings()
    assert np.array_equal(again.vectors, fresh.vectors)
    assert not np.array_equal(again.vectors, first.vectors)

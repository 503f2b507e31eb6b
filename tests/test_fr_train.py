"""FR training: configs, exact resume, checkpoints, sharding, and the fr / benchmark commands."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fsbench.data import FaceDataset
from fsbench.data.binpack import write_bin
from fsbench.data.images import encode_image
from fsbench.errors import CheckpointError, DatasetError, UsageError
from fsbench.plugins.fr.classify import split_first_k
from fsbench.plugins.fr.gap import gap_to_real
from fsbench.train.checkpoint import load_checkpoint, save_checkpoint
from fsbench.train.config import parse_overrides
from fsbench.train.data import TrainBatches
from fsbench.train.fr import FR_PRESETS, fr_config, load_backbone, lr_at, train_fr

# A tiny, fast configuration (non-standard r4 at 32 px): 48 images, batch 8 -> 6 steps/epoch.
FAST = {
    "network": "r4", "width": 8, "input_size": 32, "embedding_size": 32, "batch_size": 8,
    "epochs": 3, "lr_steps": "2", "warmup_steps": 2, "workers": 0, "dropout": 0.2,
}


def learnable_folder(root: Path, ids: int = 6, per_id: int = 8, size: int = 32, seed: int = 0, noise: float = 25.0):
    """Each identity is a fixed random pattern; its images are noisy, shifted copies."""
    rng = np.random.default_rng(seed)
    for i in range(ids):
        base = rng.integers(0, 256, (size + 4, size + 4, 3)).astype(np.float64)
        d = root / f"id{i:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_id):
            dy, dx = rng.integers(0, 5, 2)
            img = base[dy : dy + size, dx : dx + size] + rng.normal(0, noise, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{j:03d}.png")
    return root


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return learnable_folder(tmp_path_factory.mktemp("fr") / "train")


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- config


def test_presets_and_overrides():
    casia = fr_config("casia")
    assert (casia["network"], casia["batch_size"], casia["epochs"], casia["lr_steps"]) == ("r50", 512, 40, (24, 30, 36))
    assert (casia["margin"], casia["m"], casia["s"], casia["momentum"], casia["weight_decay"]) == (
        "arcface", 0.5, 30.0, 0.9, 5e-4)
    cfg = fr_config("tiny", parse_overrides(["lr=0.05", "lr_steps=3,5", "flip=false", "epochs=7", "network=r18"]))
    assert (cfg["lr"], cfg["lr_steps"], cfg["flip"], cfg["epochs"], cfg["network"]) == (0.05, (3, 5), False, 7, "r18")
    with pytest.raises(UsageError, match="unknown option\\(s\\) learning_rate"):
        fr_config("tiny", {"learning_rate": "0.1"})
    with pytest.raises(UsageError, match="epochs='ten' is not a valid int"):
        fr_config("tiny", {"epochs": "ten"})
    with pytest.raises(UsageError, match="margin='arc'"):
        fr_config("tiny", {"margin": "arc"})
    with pytest.raises(UsageError, match="unknown preset 'huge'"):
        fr_config("huge")
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_overrides(["lr"])
    assert set(FR_PRESETS) == {"tiny", "casia", "segtex"}


def test_lr_step_decay_and_warmup():
    cfg = fr_config("casia", {"warmup_steps": 4})
    spe = 100
    assert lr_at(cfg, 0, spe) == pytest.approx(0.1 / 4)
    assert lr_at(cfg, 3, spe) == pytest.approx(0.1)
    assert lr_at(cfg, 24 * spe - 1, spe) == pytest.approx(0.1)
    assert lr_at(cfg, 24 * spe, spe) == pytest.approx(0.01)
    assert lr_at(cfg, 30 * spe, spe) == pytest.approx(0.001)
    assert lr_at(cfg, 39 * spe, spe) == pytest.approx(0.0001)


# --------------------------------------------------------------------------- resume


def test_resume_is_exact(data, tmp_path, monkeypatch):
    """N steps straight == K steps, a kill two steps after the checkpoint, resume to N."""
    full = train_fr(data, tmp_path / "full", "tiny", {**FAST, "checkpoint_every": 100}, show_progress=False)
    assert full.steps == 18

    class Killed(Exception):
        pass

    def kill(step, record):
        if step == 9:  # checkpoint at 7 (mid-epoch 1); steps 8-9 are lost and redone
            raise Killed

    with pytest.raises(Killed):
        train_fr(data, tmp_path / "cut", "tiny", {**FAST, "checkpoint_every": 7}, on_step=kill, show_progress=False)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["step"] == 7
    resumed = train_fr(data, tmp_path / "cut", "tiny", {**FAST, "checkpoint_every": 7}, show_progress=False)
    assert resumed.steps == 18

    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    ma, mb = a["state"]["modules"], b["state"]["modules"]
    assert states_equal(ma["backbone"], mb["backbone"]) and states_equal(ma["head"], mb["head"])
    for sa, sb in zip(a["state"]["optimizers"]["sgd"]["state"].values(), b["state"]["optimizers"]["sgd"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    wa = torch.load(tmp_path / "full" / "backbone.pth", weights_only=True)
    wb = torch.load(tmp_path / "cut" / "backbone.pth", weights_only=True)
    assert states_equal(wa, wb)

    # every step logged exactly once, lr decayed at epoch 2 (step 12 -> 13th step)
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 19))
    assert lines[11]["lr"] == pytest.approx(0.1) and lines[12]["lr"] == pytest.approx(0.01)
    assert lines[0]["lr"] == pytest.approx(0.05)  # warm-up: 1/2 of lr on the first step
    full_lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in lines] == [r["loss"] for r in full_lines]
    cfg = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["total_steps"] == 18 and cfg["steps_per_epoch"] == 6 and cfg["num_classes"] == 6
    # the kernels the weights came from: the same seed gives the same weights on the same kind of machine
    assert cfg["platform"]["torch"] == torch.__version__ and cfg["platform"]["device"] == "cpu"
    assert cfg["platform"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()

    # another seed gives other weights; a finished run returns at once
    other = train_fr(data, tmp_path / "seed1", "tiny", {**FAST, "seed": 1, "max_steps": 3}, show_progress=False)
    assert other.steps == 3
    c = load_checkpoint(tmp_path / "seed1" / "checkpoint.pt")
    assert not torch.equal(c["state"]["modules"]["backbone"]["fc.weight"], ma["backbone"]["fc.weight"])
    decoded: list[int] = []
    real_decode = TrainBatches._decode_all
    monkeypatch.setattr(TrainBatches, "_decode_all", lambda self, show: decoded.append(1) or real_decode(self, show))
    again = train_fr(data, tmp_path / "full", "tiny", {**FAST, "checkpoint_every": 100}, show_progress=False)
    assert again.steps == 18 and math.isnan(again.loss)
    assert decoded == []  # ... without decoding the training set first

    # the backbone loads for evaluation (strict) with the run's config
    model, run_cfg = load_backbone(tmp_path / "full")
    assert run_cfg["network"] == "r4" and model(torch.zeros(1, 3, 32, 32)).shape == (1, 32)


def test_resume_refuses_other_settings_or_data(data, tmp_path):
    train_fr(data, tmp_path / "run", "tiny", {**FAST, "max_steps": 2}, show_progress=False)
    with pytest.raises(UsageError, match="lr: 0.1 -> 0.2"):
        train_fr(data, tmp_path / "run", "tiny", {**FAST, "max_steps": 4, "lr": 0.2}, show_progress=False)
    other = learnable_folder(tmp_path / "other", seed=5)
    with pytest.raises(UsageError, match="other data"):
        train_fr(other, tmp_path / "run", "tiny", {**FAST, "max_steps": 4}, show_progress=False)
    # max_steps may change: extend the run
    assert train_fr(data, tmp_path / "run", "tiny", {**FAST, "max_steps": 4}, show_progress=False).steps == 4


# --------------------------------------------------------------------------- checkpoints, data


def test_checkpoint_errors(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"kind": "fr", "step": 3, "w": torch.ones(3)})
    state = load_checkpoint(path, kind="fr")
    assert state["step"] == 3 and state["fsbench_version"] and torch.equal(state["w"], torch.ones(3))
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed away
    with pytest.raises(CheckpointError, match="expected 'gen'"):
        load_checkpoint(path, kind="gen")
    with pytest.raises(CheckpointError, match="lacks opt"):
        load_checkpoint(path, required=("opt",))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="unreadable or truncated"):
        load_checkpoint(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt: unreadable"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.ones(1)}, foreign)
    with pytest.raises(CheckpointError, match="not an fsbench checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "fsbench-checkpoint-1", "x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="unreadable"):  # weights_only refuses the global
        load_checkpoint(evil)


def test_fewer_than_two_identities_is_refused(tmp_path):
    one = learnable_folder(tmp_path / "one", ids=1, per_id=9)
    with pytest.raises(DatasetError, match="one: has 1 identity"):
        train_fr(one, tmp_path / "run", "tiny", FAST, show_progress=False)
    with pytest.raises(UsageError, match="fewer than batch_size=64"):
        train_fr(learnable_folder(tmp_path / "two", ids=2, per_id=3), tmp_path / "r2", "tiny", {"workers": 0},
                 show_progress=False)


def test_batches_shard_like_one_process(data):
    ds = FaceDataset.open(data)
    one = TrainBatches(ds, 8, 32, seed=3, flip=False, show_progress=False)
    r0 = TrainBatches(ds, 8, 32, seed=3, rank=0, world_size=2, flip=False, show_progress=False)
    r1 = TrainBatches(ds, 8, 32, seed=3, rank=1, world_size=2, flip=False, show_progress=False)
    streamed = TrainBatches(ds, 8, 32, seed=3, flip=False, cache=False, show_progress=False)
    for (x, y), (x0, y0), (x1, y1), (xs, ys) in zip(one.epoch(1), r0.epoch(1), r1.epoch(1), streamed.epoch(1)):
        assert len(y0) == len(y1) == 4
        assert torch.equal(torch.cat([x0, x1]).sort(0).values, x.sort(0).values)
        assert torch.equal(xs, x) and torch.equal(ys, y)
    assert sorted(np.concatenate([one.order(0)])) == list(range(48))
    assert not np.array_equal(one.order(0), one.order(1))
    # flips: about half, reproducible, and a flipped image is the mirror of the stored one
    f = TrainBatches(ds, 8, 32, seed=3, show_progress=False)
    (xf, _), (xn, _) = next(f.epoch(0)), next(one.epoch(0))
    flips = f.flips(0, 8)
    assert flips.any() and not flips.all()
    assert torch.equal(xf[flips], xn[flips].flip(2)) and torch.equal(xf[~flips], xn[~flips])
    with pytest.raises(UsageError, match="divide evenly over 3"):
        TrainBatches(ds, 8, 32, seed=0, world_size=3, show_progress=False)


# --------------------------------------------------------------------------- commands


def make_bin(ds_root: Path, out: Path, n_pairs: int = 20, seed: int = 0) -> Path:
    """Half genuine, half impostor pairs of the folder's images, as an insightface .bin."""
    ds = FaceDataset.open(ds_root)
    rng = np.random.default_rng(seed)
    images, issame = [], []
    by_label = {lab: np.flatnonzero(ds.labels == lab) for lab in range(ds.num_identities)}
    for k in range(n_pairs):
        a = int(rng.integers(len(ds)))
        same = k % 2 == 0
        pool = by_label[ds.labels[a]] if same else np.flatnonzero(ds.labels != ds.labels[a])
        b = int(rng.choice(pool[pool != a]))
        images += [encode_image(ds.read(a), ".jpg"), encode_image(ds.read(b), ".jpg")]
        issame.append(same)
    write_bin(out, images, issame)
    return out


def test_fr_train_command_json(cli, data, tmp_path):
    res = cli.json("fr", "train", "--data", data, "--run", tmp_path / "run", "-o", "max_steps=2",
                   *sum((["-o", f"{k}={v}"] for k, v in FAST.items()), []))
    assert res["steps"] == 2 and res["config"]["network"] == "r4" and Path(res["backbone"]).exists()
    bad = cli("fr", "train", "--data", data, "--run", tmp_path / "r2", "-o", "bogus=1")
    assert bad.exit_code == 2 and "unknown option(s) bogus" in bad.stderr and "Traceback" not in bad.stderr


def test_benchmark_fr_table_and_files(cli, tmp_path):
    real = learnable_folder(tmp_path / "real", ids=6, per_id=8, seed=0)
    syn = learnable_folder(tmp_path / "syn", ids=6, per_id=8, seed=1, noise=60.0)
    held = learnable_folder(tmp_path / "held", ids=4, per_id=6, seed=7)
    b1, b2 = make_bin(held, tmp_path / "b" / "easy.bin", 20), make_bin(held, tmp_path / "b" / "other.bin", 20, seed=1)
    opts = sum((["-o", f"{k}={v}"] for k, v in {**FAST, "epochs": 2, "lr_steps": "1"}.items()), [])
    out = cli.json("benchmark", "fr", "--train", syn, "--baseline", real, "--bench", f"{b1},{b2}", "--mix",
                   "--out", tmp_path / "out", *opts)
    rows = out["rows"]
    assert [r["kind"] for r in rows] == ["real", "synthetic", "real+synthetic"]
    assert [r["training_set"] for r in rows] == ["real", "syn", "real + syn"]
    assert rows[2]["identities"] == 12 and rows[2]["images"] == 96
    for r in rows:
        assert 0 <= r["easy"] <= 100 and 0 <= r["other"] <= 100
        assert r["average"] == pytest.approx((r["easy"] + r["other"]) / 2)
    assert rows[1]["gap_to_real_pct"] == pytest.approx(100 * (rows[0]["average"] - rows[1]["average"]) / rows[1]["average"])
    assert rows[2]["delta_vs_real"] == pytest.approx(rows[2]["average"] - rows[0]["average"])
    assert out["pairs"] == {"easy": 20, "other": 20} and out["folds"] == 10
    df = pd.read_csv(tmp_path / "out" / "fr_benchmark.csv")
    assert list(df["training_set"]) == ["real", "syn", "real + syn"]
    md = (tmp_path / "out" / "fr_benchmark.md").read_text()
    assert "| Training set |" in md and "GR (%)" in md and "easy" in md

    # the reported accuracy is part A's verification of the trained model, reproduced here
    from fsbench.data.pairs import read_bin_pairs
    from fsbench.plugins.fr.embedder import RunEmbedder
    from fsbench.verification import verify_embedder

    res = verify_embedder(RunEmbedder(rows[0]["run_dir"]), read_bin_pairs(b1), flip=True, n_folds=10)
    assert 100 * res.accuracy == pytest.approx(rows[0]["easy"])
    bad = cli("benchmark", "fr", "--train", syn, "--baseline", real, "--bench", tmp_path / "nope.bin")
    assert bad.exit_code == 2 and "nope.bin" in bad.stderr


def test_gap_to_real_formula():
    # VIGFace Table 2: CASIA average 92.77, VIGFace(B) 89.78 -> GR 3.3 %
    assert 100 * gap_to_real(92.77, 89.78) == pytest.approx(3.33, abs=0.01)
    assert gap_to_real(90.0, 90.0) == 0.0


def test_split_first_k_and_classify(cli, tmp_path):
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    train, val = split_first_k(labels, 2)
    assert train.tolist() == [0, 1, 3, 4, 5, 6] and val.tolist() == [2, 7, 8]
    data = learnable_folder(tmp_path / "cls", ids=5, per_id=14, seed=2, noise=20.0)
    shutil.rmtree(data / "id04")
    learnable_folder(tmp_path / "cls_small", ids=1, per_id=6, seed=9)  # one identity with < 11 images
    shutil.move(tmp_path / "cls_small" / "id00", data / "id_small")
    opts = sum((["-o", f"{k}={v}"] for k, v in {**FAST, "dropout": 0.0, "epochs": 12, "lr_steps": "9"}.items()), [])
    out = cli.json("benchmark", "classify", "--data", data, "--train-per-id", "10", *opts)
    (r,) = out["rows"]
    assert (r["identities"], r["train_images"], r["val_images"], r["ids_without_val"]) == (5, 46, 16, 1)
    assert r["margin"] == "linear"
    assert r["accuracy"] >= 87.5  # 16 validation images of 4 easy identities: at most 2 wrong
    bad = cli("benchmark", "classify", "--data", data, "--train-per-id", "50", *opts)
    assert bad.exit_code == 2 and "no identity has more than 50 images" in bad.stderr


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_two_processes_cpu(data, tmp_path):
    """Two CPU ranks (gloo): the same command trains, only rank 0 writes, every step logged once."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    opts = sum((["-o", f"{k}={v}"] for k, v in {**FAST, "max_steps": 4}.items()), [])
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "fsbench.cli", "fr", "train",
           "--data", str(data), "--run-dir", str(tmp_path / "ddp"), "--json", *opts]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1", **_env()})
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert cfg["world_size"] == 2
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["step"] == 4


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}

"""The generator platform end to end, on a tiny trainable generator (tests/plugins/toygen.py):
staged training with init-from, `runs show`, resume after a kill, sharded sampling that
writes the bytes of an unsharded run, resume of sampling, `evaluate --generator` keyed by
what the samples are a function of, and one-line refusals of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fsbench.errors import UsageError
from fsbench.registry import Registry, set_registry
from fsbench.runs import Run, train_generator
from fsbench.sampling import Shard, parse_shard, plan_sampling, sample_dataset

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(autouse=True)
def toy_registry(monkeypatch):
    """The built-ins plus the toy generator, loaded as users' loose plugin files are."""
    monkeypatch.setenv("FSBENCH_PLUGINS_DIR", str(PLUGINS))
    set_registry(Registry())
    yield
    set_registry(None)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from conftest import write_folder

    return write_folder(tmp_path_factory.mktemp("toy") / "data", ids=4, per_id=6, size=20, seed=3)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    from fsbench.data import FaceDataset

    set_registry(Registry(plugins_dir=PLUGINS))
    from fsbench.registry import get_registry

    run_dir = tmp_path_factory.mktemp("runs") / "toy"
    train_generator(get_registry().generator("toy"), FaceDataset.open(data), run_dir, show_progress=False)
    set_registry(None)
    return run_dir


def gen():
    from fsbench.registry import get_registry

    return get_registry().generator("toy")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "dataset.json"}


# --------------------------------------------------------------------------- training


def test_train_runs_both_stages_and_runs_show_reports_them(cli, data, tmp_path):
    out = cli.json("train", "toy", "--data", data, "--run", tmp_path / "r", "-o", "steps=5")
    assert [s["stage"] for s in out["stages"]] == ["mean", "noise"]
    assert all(s["state"] == "finished" and s["steps"] == 5 for s in out["stages"])
    shown = cli.json("runs", "show", tmp_path / "r")
    from fsbench.hashing import sha256_of

    for s in shown["stages"]:
        assert s["checkpoint_sha256"] == sha256_of(tmp_path / "r" / s["stage"] / "checkpoint.pt")
    noise = shown["stages"][1]
    assert noise["started_from"] == {"mean": shown["stages"][0]["checkpoint_sha256"]}  # init-from, recorded
    assert shown["config"]["steps"] == 5 and shown["generator"] == "toy"
    text = cli("runs", "show", tmp_path / "r")
    assert text.exit_code == 0 and "finished" in text.stdout and "steps=5" in text.stdout


def test_the_second_stage_starts_from_the_first(trained):
    run = Run.open(trained, gen())
    mean = run.load("mean")["modules"]["means"]["weight"]
    noise = run.load("noise")
    assert torch.equal(noise["modules"]["means"]["weight"], mean)  # frozen copy of stage 1's weights
    assert float(noise["tensors"]["seen"]) == 12 * 8  # the extra running tensor rode along
    assert not torch.equal(noise["ema"]["noise"]["scale"], noise["modules"]["noise"]["scale"])


def test_a_killed_stage_resumes_to_the_weights_of_an_uninterrupted_run(data, trained, tmp_path):
    from fsbench.data import FaceDataset

    class Killed(Exception):
        pass

    calls = []

    def kill(step, record):
        calls.append(step)
        if len(calls) == 12 + 7:  # stage noise, step 7 (checkpoint at 4)
            raise Killed

    ds = FaceDataset.open(data)
    with pytest.raises(Killed):
        train_generator(gen(), ds, tmp_path / "cut", on_step=kill, show_progress=False)
    assert Run.open(tmp_path / "cut", gen()).finished("mean") and not Run.open(tmp_path / "cut", gen()).finished("noise")
    train_generator(gen(), ds, tmp_path / "cut", show_progress=False)
    a, b = Run.open(trained, gen()).load("noise"), Run.open(tmp_path / "cut", gen()).load("noise")
    for group in ("modules", "ema", "tensors"):
        fa, fb = a[group], b[group]
        for name in fa:
            va, vb = fa[name], fb[name]
            if isinstance(va, dict):
                assert all(torch.equal(va[k], vb[k]) for k in va), (group, name)
            else:
                assert torch.equal(va, vb)


def test_training_refuses_bad_input_in_one_line(cli, data, trained, tmp_path):
    def refused(*args, match):
        r = cli(*args)
        assert r.exit_code == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert match in r.stderr, r.stderr

    refused("train", "toy", "--data", data, "--run", tmp_path / "a", "-o", "stepz=3", match="did you mean steps")
    refused("train", "toy", "--data", data, "--run", tmp_path / "a", "-o", "lr=nan", match="lr")
    refused("train", "toy", "--data", data, "--run", tmp_path / "a", "-o", "steps=x", match="steps")
    refused("train", "toy", "--data", data, "--run", tmp_path / "a", "--stage", "noise",
            match="stage 'mean' has not finished")
    refused("train", "toy", "--data", data, "--run", tmp_path / "a", "--stage", "nope", match="no stage 'nope'")
    refused("train", "procedural", "--data", data, "--run", tmp_path / "a", match="needs no training")
    refused("train", "toy", "--data", data, "--run", trained, "-o", "lr=0.1", match="other settings (lr: 0.05 -> 0.1)")
    mine = tmp_path / "thesis"
    (mine / "chapter").mkdir(parents=True)
    refused("train", "toy", "--data", data, "--run", mine, match="not an fsbench run folder")
    assert (mine / "chapter").is_dir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"generator": "procedural"}))
    refused("train", "toy", "--data", data, "--run", other, match="a run of generator 'procedural', not 'toy'")
    refused("sample", "toy", "--run", trained, "--out", tmp_path / "s", "--shard", "3/2", match="--shard 3/2")
    refused("sample", "toy", "--run", trained, "--out", tmp_path / "s", "--ids", "9", match="knows 4 identities")
    refused("sample", "toy", "--run", trained, "--out", tmp_path / "s", "-o", "noise=-1", match="noise")
    refused("sample", "toy", "--out", tmp_path / "s", match="pass --run DIR")
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()


def test_a_damaged_checkpoint_is_refused_before_sampling(trained, tmp_path, cli):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    ckpt = copy / "noise" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    r = cli("sample", "toy", "--run", copy, "--out", tmp_path / "s")
    assert r.exit_code == 2 and "sha256 differs" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- sampling


def sample(run_dir, out, shard=None, n_ids=4, per_id=5, seed=7, **options):
    plan = plan_sampling(gen(), run_dir, n_ids=n_ids, per_id=per_id, seed=seed, overrides=options)
    return sample_dataset(plan.sampler, plan.request, out, shard=shard or Shard(), info=plan.info,
                          show_progress=False)


def test_two_shards_write_the_bytes_of_one_run(trained, tmp_path):
    whole = sample(trained, tmp_path / "whole")
    assert whole is not None and len(whole) == 20 and whole.num_identities == 4
    assert sample(trained, tmp_path / "sharded", Shard(1, 2)) is None  # not complete yet
    assert not (tmp_path / "sharded").exists()
    done = sample(trained, tmp_path / "sharded", Shard(0, 2))  # the last shard completes it
    assert done is not None and len(done) == 20
    assert tree_bytes(tmp_path / "whole") == tree_bytes(tmp_path / "sharded")
    info = json.loads((tmp_path / "sharded" / "dataset.json").read_text())
    run = Run.open(trained, gen())
    assert info["request"]["checkpoints"] == run.hashes() and info["request"]["seed"] == 7
    assert info["sampler"] == {"weights": "ema"} and info["generator"] == "toy"
    # per-image records: which identity row, image index and seed made it
    m = done.manifest
    assert list(m["row"][:6]) == [0, 0, 0, 0, 0, 1] and list(m["image_index"][:6]) == [0, 1, 2, 3, 4, 0]
    # other seed, other images; the same request again is a no-op
    other = sample(trained, tmp_path / "seed8", seed=8)
    assert tree_bytes(tmp_path / "seed8") != tree_bytes(tmp_path / "whole") and len(other) == 20
    again = sample(trained, tmp_path / "whole")
    assert tree_bytes(tmp_path / "whole") == tree_bytes(tmp_path / "sharded") and len(again) == 20


def test_sampling_resumes_after_a_kill_to_the_same_bytes(trained, tmp_path, monkeypatch):
    sample(trained, tmp_path / "whole")
    toy_sampler = type(plan_sampling(gen(), trained, n_ids=1, per_id=1, seed=0).sampler)
    real = toy_sampler.sample
    calls = []

    def dying(self, keys):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, keys)

    monkeypatch.setattr(toy_sampler, "sample", dying)
    with pytest.raises(KeyboardInterrupt):
        sample(trained, tmp_path / "cut")
    assert (tmp_path / "cut.partial").exists() and not (tmp_path / "cut").exists()
    monkeypatch.setattr(toy_sampler, "sample", real)
    with pytest.raises(UsageError, match="other settings"):
        sample(trained, tmp_path / "cut", seed=9)
    sample(trained, tmp_path / "cut")
    assert tree_bytes(tmp_path / "whole") == tree_bytes(tmp_path / "cut")


def test_shards_in_separate_processes_complete_one_dataset(trained, tmp_path):
    env = {"FSBENCH_PLUGINS_DIR": str(PLUGINS), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "fsbench.cli", "sample", "toy", "--run", str(trained), "--out",
           str(tmp_path / "s"), "--ids", "4", "--per-id", "5", "--seed", "7", "--json"]
    procs = [subprocess.Popen([*cmd, "--shard", f"{i}/3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(3)]
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert sorted(o["complete"] for o in outs) == [False, False, True]
    sample(trained, tmp_path / "whole")
    assert tree_bytes(tmp_path / "s") == tree_bytes(tmp_path / "whole")


def test_parse_shard():
    assert parse_shard("1/4") == Shard(1, 4) and parse_shard(None) == Shard()
    for bad in ("3/2", "2/2", "-1/2", "a/b", "1", "0/0"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


# --------------------------------------------------------------------------- evaluate --generator


def test_evaluate_generator_never_scores_stale_samples(cli, trained, tmp_path):
    base = ["evaluate", "--generator", "toy", "--run", trained, "--ids", "3", "--per-id", "4",
            "--embedder", "pixels", "--metrics", "summary,cst", "--out", tmp_path / "ev", "--overwrite"]
    a = cli.json(*base)
    b = cli.json(*base, "-o", "toy.noise=0")  # other options: other samples
    c = cli.json(*base[:7], "--per-id", "3", *base[9:])  # other size: other samples
    roots = {a["dataset"], b["dataset"], c["dataset"]}
    assert len(roots) == 3
    assert a["metrics"]["summary"]["images"] == 12 and c["metrics"]["summary"]["images"] == 9
    # without noise every image of an identity is its mean: CST 1 (up to uint8 rounding)
    assert b["metrics"]["cst"]["mean"] > 0.999 > a["metrics"]["cst"]["mean"]
    assert cli.json(*base)["dataset"] == a["dataset"]  # the same request reuses its samples
    bad = cli(*base, "-o", "toy.nois=1")
    assert bad.exit_code == 2 and "did you mean noise" in bad.stderr


def test_contract_kit_passes_the_toy_generator(data, tmp_path):
    from fsbench.testing import check_generator

    report = check_generator(type(gen()), data, tmp_path)
    assert report["stages"] == ["mean", "noise"] and report["sharded_equals_unsharded"]
    assert np.isfinite(report["seconds"])


def test_plugins_show_lists_stages_presets_and_every_option(cli):
    info = cli.json("plugins", "show", "toy")
    assert [s["name"] for s in info["stages"]] == ["mean", "noise"] and info["stages"][1]["needs"] == ["mean"]
    assert info["presets"]["paper"] == {"steps": 1000, "batch_size": 64}
    lr = next(o for o in info["config"] if o["name"] == "lr")
    assert lr["type"] == "float > 0" and lr["default"] == 0.05
    assert [o["name"] for o in info["sample_options"]] == ["noise", "weights"]
    text = cli("plugins", "show", "toy")
    assert text.exit_code == 0 and "stage noise (needs: mean)" in text.stdout
    bad = cli("plugins", "show", "tyo", "--kind", "generator")
    assert bad.exit_code == 2 and "did you mean 'toy'" in bad.stderr


def test_a_bad_generator_declaration_is_refused_at_registration():
    import types

    import fsbench
    from fsbench.api import Generator, Stage
    from fsbench.errors import PluginError
    from fsbench.registry import Registry

    class NoPaper(Generator):
        name = "nopaper"
        SampleOptions = type(gen()).SampleOptions
        presets = {"tiny": {}}

        def sampler(self, run, config, options):  # pragma: no cover
            raise AssertionError

    class BadOrder(NoPaper):
        name = "badorder"
        presets = {"tiny": {}, "paper": {}}
        stages = (Stage("b", needs=("a",)), Stage("a"))

    for cls, message in ((NoPaper, "presets lack paper"), (BadOrder, "not an earlier stage")):
        reg = Registry(entry_points=False)
        reg.register(types.SimpleNamespace(fsbench_register_generators=fsbench.hookimpl(lambda c=cls: [c])), name="p")
        assert cls.name not in reg.names("generator")  # left out and named, never breaking the others
        with pytest.raises(PluginError, match=message):
            reg.get("generator", cls.name)


def test_torchrun_trains_every_stage_and_its_ranks_sample_as_shards(trained, data, tmp_path):
    """Two CPU ranks (gloo): one run.json, each stage finished once, world size recorded; then the
    ranks of a torchrun `sample` are its shards and write the bytes of one process."""
    import os
    import shutil

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**{k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")},
           "OMP_NUM_THREADS": "1", "FSBENCH_PLUGINS_DIR": str(PLUGINS)}
    base = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "fsbench"]
    proc = subprocess.run([*base, "train", "toy", "--data", str(data), "--run-dir", str(tmp_path / "ddp"), "--json",
                           "-o", "steps=4"], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for stage in ("mean", "noise"):
        cfg = json.loads((tmp_path / "ddp" / stage / "config.json").read_text())
        assert cfg["world_size"] == 2 and cfg["total_steps"] == 4
        lines = (tmp_path / "ddp" / stage / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]
    proc = subprocess.run([*base, "sample", "toy", "--run-dir", str(trained), "--out", str(tmp_path / "s"), "--ids", "4",
                           "--per-id", "5", "--seed", "7"], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sample(trained, tmp_path / "whole")
    assert tree_bytes(tmp_path / "s") == tree_bytes(tmp_path / "whole")


def test_an_exported_run_samples_the_same_bytes_and_cannot_be_trained(cli, trained, data, tmp_path):
    out = cli.json("runs", "export", trained, "--out", tmp_path / "exp", "--note", "fsbench train toy ...",
                   "--sample-default", "weights=last")
    assert out["sample_defaults"] == {"weights": "last"}
    assert set(out["stages"]) == {"mean", "noise"} and out["commands"] == "fsbench train toy ..."
    size = sum(p.stat().st_size for p in (tmp_path / "exp").rglob("checkpoint.pt"))
    assert size < sum(p.stat().st_size for p in trained.rglob("checkpoint.pt"))  # no optimizer states
    sample(trained, tmp_path / "a", weights="last")
    sample(tmp_path / "exp", tmp_path / "b")  # its recommended weights=last
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "dataset.json").read_text())["request"]["options"]["weights"] == "last"
    sample(tmp_path / "exp", tmp_path / "c", weights="ema")  # -o still wins
    assert tree_bytes(tmp_path / "c") != tree_bytes(tmp_path / "b")
    bad = cli("runs", "export", trained, "--out", tmp_path / "x", "--sample-default", "weights=best")
    assert bad.exit_code == 2 and "weights" in bad.stderr
    r = cli("train", "toy", "--data", data, "--run", tmp_path / "exp")
    assert r.exit_code == 2 and "exported run (weights only) cannot be trained" in r.stderr


def test_data_pairs_are_balanced_identity_disjoint_folds_and_seeded(cli, data, tmp_path):
    import pandas as pd

    out = cli.json("data", "pairs", data, "--out", tmp_path / "p.csv", "--pairs", 40, "--folds", 2)
    assert out["pairs"] == 40 and out["genuine"] == 20
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p.columns) == ["path_a", "path_b", "same", "fold"]
    ident = lambda path: path.split("/")[0]  # noqa: E731
    assert all((ident(a) == ident(b)) == bool(s) for a, b, s in zip(p.path_a, p.path_b, p.same))
    assert (p.path_a != p.path_b).all()
    for f in (0, 1):
        assert (p[p.fold == f].same.sum(), (p.fold == f).sum()) == (10, 20)
    ids = [set(p[p.fold == f].path_a.map(ident)) | set(p[p.fold == f].path_b.map(ident)) for f in (0, 1)]
    assert not ids[0] & ids[1]  # a fold's identities appear in no other fold
    again = cli.json("data", "pairs", data, "--out", tmp_path / "q.csv", "--pairs", 40, "--folds", 2)
    assert again["pairs"] == 40 and (tmp_path / "p.csv").read_bytes() == (tmp_path / "q.csv").read_bytes()
    other = cli.json("data", "pairs", data, "--out", tmp_path / "r.csv", "--pairs", 40, "--folds", 2, "--seed", 1)
    assert other["pairs"] == 40 and (tmp_path / "r.csv").read_bytes() != (tmp_path / "p.csv").read_bytes()
    v = cli.json("verify", "--pairs", tmp_path / "p.csv", "--root", data, "--embedder", "pixels")
    assert v["pairs"] == 40 and v["folds"] == 2
    bad = cli("data", "pairs", data, "--out", tmp_path / "x.csv", "--pairs", 30)
    assert bad.exit_code == 2 and "multiple of 20" in bad.stderr


def test_training_a_finished_run_again_plans_nothing(data, tmp_path, monkeypatch):
    """A finished stage is skipped from its status.json, before its models are built or its
    data decoded; a larger max_steps does plan and extend it."""
    from fsbench.data import FaceDataset

    ds = FaceDataset.open(data)
    train_generator(gen(), ds, tmp_path / "r", overrides={"max_steps": 3}, show_progress=False)
    planned = []
    real = type(gen()).plan_stage
    monkeypatch.setattr(type(gen()), "plan_stage", lambda self, stage, ctx: planned.append(stage) or real(self, stage, ctx))
    train_generator(gen(), ds, tmp_path / "r", overrides={"max_steps": 3}, show_progress=False)
    assert planned == []
    train_generator(gen(), ds, tmp_path / "r", overrides={"max_steps": 5}, show_progress=False)
    assert planned == ["mean", "noise"]
    assert [Run.open(tmp_path / "r", gen()).status(s)["steps"] for s in ("mean", "noise")] == [5, 5]

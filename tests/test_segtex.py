"""SegTex as a generator, end to end on a micro run: both stages trained through the platform,
the exact resume of the texture stage's two optimizers, the seven-step dataset pipeline and
its manifest, the contract kit, a pose step replaced by a plugin, and bad input refused in
one line naming the file. The networks and losses are tested in test_segtex_nets.py."""

from __future__ import annotations

import json
import shutil
import types

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import micro_train, run_cli
from PIL import Image

import fsbench
from fsbench.api import PipelineStep
from fsbench.generators.segtex import SegTex
from fsbench.generators.segtex.config import PRESETS, SegTexConfig
from fsbench.generators.segtex.data import nearest_map
from fsbench.generators.segtex.sampler import SegTexSampler
from fsbench.generators.segtex.steps import SLOTS, Augment, Maps, Pose, SegTexContext, gaussian_kernel, pose_grid

MICRO = {"segmap_batch_size": 8, "texture_batch_size": 8, "segmap_epochs": 1, "texture_epochs": 2,
         "checkpoint_every": 3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("stx") / "world"
    run_cli("data", "make", "procedural", "--out", root, "--ids", "8", "--per-id", "4", "--workers", "1", "--size", "64")
    return root


@pytest.fixture(scope="module")
def micro_run(world, tmp_path_factory):
    return micro_train("segtex", world, tmp_path_factory.mktemp("stxrun") / "run", MICRO)


# --------------------------------------------------------------------------- config and steps


def test_presets_paper_is_table_3_and_tiny_is_32_px():
    from fsbench.options import parse

    paper = parse(SegTexConfig, PRESETS["paper"], where="t")
    assert (paper.lr, paper.lr_d, paper.beta1, paper.beta2) == (2e-4, 2e-4, 0.5, 0.999)
    assert (paper.segmap_batch_size, paper.texture_batch_size, paper.image_size, paper.size) == (32, 32, 256, "paper")
    assert paper.texture_epochs == 35 and paper.vgg_path is None and paper.feature_net == "auto"
    tiny = parse(SegTexConfig, PRESETS["tiny"], where="t")
    assert (tiny.size, tiny.image_size) == ("tiny", 32)
    from fsbench.generators.segtex.stages import segtex_size

    assert segtex_size(paper).texture.start == 8 and segtex_size(tiny).texture.image_size == 32
    from fsbench.errors import UsageError

    with pytest.raises(UsageError, match="image_size=36 does not fit size 'tiny'"):
        segtex_size(parse(SegTexConfig, {**PRESETS["tiny"], "image_size": 36}, where="t"))
    SegTex.check_declaration()
    assert [s.name for s in SegTex.stages] == ["segmap", "texture"] and SegTex.stages[1].needs == ("segmap",)


def test_nearest_map_reads_floor_of_the_scaled_index():
    m = np.arange(64, dtype=np.uint8).reshape(1, 8, 8)
    out = nearest_map(m, 4)
    assert out.shape == (1, 4, 4) and out[0, 1, 3] == m[0, 2, 6]
    assert nearest_map(m, 8) is m


def _options(**kw):
    from fsbench.generators.segtex.config import SegTexOptions
    from fsbench.options import parse

    return parse(SegTexOptions, kw, where="t")


def _batch(n=3, s=8, seed=0):
    rng = np.random.default_rng(seed)
    keys = [types.SimpleNamespace(image=j) for j in range(n)]
    return {"images": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
            "maps": rng.integers(0, 19, (n, s, s), dtype=np.uint8), "keys": keys, "params": [{} for _ in range(n)]}


def test_pose_without_angles_is_the_identity_and_with_yaw_moves_the_centre_not_the_border():
    ctx = types.SimpleNamespace(options=_options(pose_max_yaw=0, pose_max_pitch=0))
    b = _batch()
    images, maps = b["images"].copy(), b["maps"].copy()
    out = Pose().apply({**b, "segtex": ctx}, [np.random.default_rng(i) for i in range(3)])
    assert np.array_equal(out["images"], images) and np.array_equal(out["maps"], maps)
    assert out["params"][0]["pose"] == {"yaw": 0.0, "pitch": 0.0}
    grid = pose_grid(np.radians([30.0]), np.radians([0.0]), 16, 0.6)[0]
    ident = pose_grid(np.zeros(1), np.zeros(1), 16, 0.6)[0]
    shift = grid[..., 0] - ident[..., 0]
    assert shift[8, 8] == pytest.approx(-0.6 * 0.5 * np.sqrt(1 - 2 * (1 / 16) ** 2), rel=1e-5)  # z sin(30 deg)
    assert shift[0, 0] == 0 and np.all(grid[..., 1] == ident[..., 1])  # border fixed, no pitch: rows stay


def test_augment_draws_its_parameters_per_item_and_zero_strength_changes_nothing():
    ctx = types.SimpleNamespace(options=_options(augment_brightness=0, augment_contrast=0, augment_balance=0,
                                                 augment_blur=0))
    b = _batch()
    images = b["images"].copy()
    out = Augment().apply({**b, "segtex": ctx}, [np.random.default_rng(i) for i in range(3)])
    assert np.array_equal(out["images"], images)
    ctx.options = _options()
    b1 = Augment().apply({**_batch(), "segtex": ctx}, [np.random.default_rng(i) for i in range(3)])
    b2 = Augment().apply({**_batch(n=1), "segtex": ctx}, [np.random.default_rng(0)])
    assert np.array_equal(b1["images"][0], b2["images"][0]) and b1["params"][0] == b2["params"][0]  # batch-free
    assert set(b1["params"][0]["augment"]) == {"brightness", "contrast", "balance_r", "balance_g", "balance_b",
                                               "blur_sigma"}
    k = gaussian_kernel(1.0)
    assert k.sum() == pytest.approx(1) and len(k) == 7 and k[3] == k.max()


# --------------------------------------------------------------------------- training


def _maps_batch(map_textures: str):
    """Three images of one identity through step 1 with a stand-in segmap net whose map is 1
    where the hair crop is brighter than its mean, so the map shows which crop shaped it."""
    rng = np.random.default_rng(1)
    pool = rng.integers(0, 256, (6, 5, 8, 8, 3), dtype=np.uint8)

    def segmap(skin, hair, mouth):
        lum = hair.mean(1, keepdim=True)  # (B, 1, S, S)
        return torch.cat([lum <= lum.mean((2, 3), keepdim=True), lum > lum.mean((2, 3), keepdim=True)], 1).float()

    ctx = SegTexContext(segmap=segmap, texture=None, device=torch.device("cpu"), pool_regions=pool,
                        pool_paths=[f"p{k}" for k in range(6)], options=_options(map_textures=map_textures),
                        weights="ema", size=8)
    identity = np.repeat(pool[[0]], 3, axis=0)  # (3, 5, S, S, 3): every image starts from item 0's crops
    batch = {**_batch(3), "regions": identity.copy(), "segtex": ctx}
    rngs = [np.random.default_rng([0, 0, j, 0]) for j in range(3)]
    return Maps().apply(batch, rngs), identity, pool


def test_step_1_shapes_the_map_with_drawn_crops_and_paints_it_with_the_identitys_own():
    batch, identity, pool = _maps_batch("identity")
    hair = [int(p["maps"]["hair_source"][1:]) for p in batch["params"]]
    assert len(set(hair)) > 1  # three draws, different hairstyles
    for i, h in enumerate(hair):  # the map is the drawn crop's
        lum = pool[h, 1].astype(float).mean(-1)
        assert np.array_equal(batch["maps"][i], (lum > lum.mean()).astype(np.uint8))
    assert np.array_equal(batch["regions"], identity)  # the textures stay the identity's
    drawn, _, pool = _maps_batch("drawn")
    assert all(np.array_equal(drawn["regions"][i, 1], pool[int(p["maps"]["hair_source"][1:]), 1])
               for i, p in enumerate(drawn["params"]))


def test_the_first_pool_size_identities_never_share_a_skin():
    fake = types.SimpleNamespace(context=types.SimpleNamespace(pool_paths=list(range(40))))
    rows = [SegTexSampler.source(fake, 7, r) for r in range(45)]
    assert sorted(rows[:40]) == list(range(40)) and rows[40:] == rows[:5]
    assert [SegTexSampler.source(fake, 8, r) for r in range(40)] != rows[:40]  # another seed, another order


def test_micro_run_trains_both_stages_and_records_the_feature_network(micro_run):
    from fsbench.runs import Run

    seg = [json.loads(x) for x in (micro_run / "segmap" / "metrics.jsonl").read_text().splitlines()]
    tex = [json.loads(x) for x in (micro_run / "texture" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in seg] == [1, 2, 3, 4] and len(tex) == 8  # 32 images / batch 8, 1 and 2 epochs
    assert {"loss_l1", "loss_perc", "loss_adv", "loss_d", "pixel_acc"} <= set(seg[0])
    assert {"loss_style", "loss_seg", "loss_perc", "loss_l1", "loss_adv", "loss_d"} <= set(tex[0])
    run = Run.open(micro_run, SegTex())
    texture = run.load("texture")
    assert texture["extra"]["feature_net"] == "discriminator" and texture["extra"]["region_size"] == 64
    assert set(texture["optimizers"]) == {"g", "d"} and set(texture["ema"]) == {"texture"}
    assert run.load("segmap")["extra"]["feature_net"] == "discriminator"


def test_a_killed_texture_stage_resumes_to_the_weights_and_both_optimizers_of_an_uninterrupted_run(
        world, micro_run, tmp_path):
    from fsbench.data import FaceDataset
    from fsbench.runs import Run, train_generator

    class Killed(Exception):
        pass

    def kill(step, record):
        if record.get("loss_style") is not None and step == 5:  # texture step 5; its checkpoint is at 3
            raise Killed

    ds = FaceDataset.open(world)
    with pytest.raises(Killed):
        train_generator(SegTex(), ds, tmp_path / "cut", "tiny", MICRO, on_step=kill, show_progress=False)
    assert not Run.open(tmp_path / "cut", SegTex()).finished("texture")
    train_generator(SegTex(), ds, tmp_path / "cut", "tiny", MICRO, show_progress=False)
    a, b = Run.open(micro_run, SegTex()).load("texture"), Run.open(tmp_path / "cut", SegTex()).load("texture")
    for group in ("modules", "ema"):
        for name, sd in a[group].items():
            for key, value in sd.items():
                assert torch.equal(value, b[group][name][key]), f"{group}.{name}.{key}"
    for name in ("g", "d"):
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)


# --------------------------------------------------------------------------- sampling


def test_sampling_runs_the_seven_steps_and_the_manifest_records_each(cli, micro_run, tmp_path):
    out = cli.json("sample", "segtex", "--run", micro_run, "--out", tmp_path / "s", "--ids", "2", "--per-id", "3",
                   "-o", "maps_per_identity=2", "-o", "batch_size=4")
    assert out["identities"] == 2 and out["image_size"] == [32, 32]
    m = pd.read_csv(tmp_path / "s" / "manifest.csv")
    for slot in SLOTS:
        assert slot in m.columns
    assert set(m["refiner"]) == {"not installed"} and set(m["age"]) == {"not installed"}
    assert set(m["pose"]) == {"segtex.pose"} and m["pose_yaw"].abs().max() <= 30 and m["pose_pitch"].abs().max() <= 10
    for col in ("maps_hair_source", "texture_randomisation_skin_gain", "augment_brightness", "augment_contrast",
                "augment_balance_r", "augment_blur_sigma", "texture_application_weights"):
        assert col in m.columns
    assert list(m["maps_variant"]) == [0, 1, 0, 0, 1, 0]
    first = m[m["identity"] == "segtex_000000"]
    assert first["maps_hair_source"].iloc[0] == first["maps_hair_source"].iloc[2]  # variant 0 twice: one map
    assert first["skin_source"].nunique() == 1 and first["pose_yaw"].nunique() == 3
    info = json.loads((tmp_path / "s" / "dataset.json").read_text())
    assert info["sampler"]["pipeline"]["refiner"]["status"] == "not installed"
    assert info["sampler"]["pipeline"]["pose"] == {"step": "segtex.pose", "status": "ran", "plugin": "segtex"}
    assert info["sampler"]["feature_net"] == "discriminator"
    mask = np.asarray(Image.open(tmp_path / "s" / "masks" / "segtex_000001" / "0002.png"))
    assert mask.shape == (32, 32) and mask.max() < 19


def test_contract_kit_passes_segtex(world, tmp_path):
    from fsbench.testing import check_generator

    report = check_generator(SegTex, world, tmp_path, overrides=MICRO, options={"batch_size": 2}, n_ids=2, per_id=3)
    assert report["stages"] == ["segmap", "texture"] and report["sharded_equals_unsharded"]


class TiltOnly(PipelineStep):
    """A plugin's pose step: a fixed pitch-only warp."""

    name = "mine.pose"
    pipeline, slot, replaces = "segtex", "pose", True

    def apply(self, batch, rngs):
        for i, rng in enumerate(rngs):
            batch["params"][i]["pose"] = {"tilt": float(rng.uniform(-5, 5))}
        batch["images"] = batch["images"][:, ::-1].copy()
        return batch


def test_a_plugin_replaces_the_pose_step_and_is_recorded(cli, micro_run, tmp_path, fresh_registry):
    before = cli.json("sample", "segtex", "--run", micro_run, "--out", tmp_path / "a", "--ids", "2", "--per-id", "2")
    plugin = types.SimpleNamespace(fsbench_register_pipeline_steps=fsbench.hookimpl(lambda: [TiltOnly]))
    fresh_registry.get_registry().register(plugin, name="mypose")
    after = cli.json("sample", "segtex", "--run", micro_run, "--out", tmp_path / "b", "--ids", "2", "--per-id", "2")
    assert before["images"] == after["images"] == 4
    a, b = pd.read_csv(tmp_path / "a" / "manifest.csv"), pd.read_csv(tmp_path / "b" / "manifest.csv")
    assert set(b["pose"]) == {"mine.pose"} and "pose_tilt" in b.columns and "pose_yaw" not in b.columns
    assert list(a["augment_brightness"]) == list(b["augment_brightness"])  # other steps' draws unchanged
    info = json.loads((tmp_path / "b" / "dataset.json").read_text())
    assert info["sampler"]["pipeline"]["pose"] == {"step": "mine.pose", "status": "ran", "plugin": "mypose"}


# --------------------------------------------------------------------------- bad input


def _refused(cli, *args, match):
    r = cli(*args)
    assert r.exit_code == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


@pytest.mark.parametrize("damage", ["class_25", "missing_regions", "map_size", "strip_shape"])
def test_bad_training_data_is_one_line_naming_the_file(cli, world, tmp_path, damage):
    bad = tmp_path / "world"
    shutil.copytree(world, bad)
    mask = bad / "masks" / "id_00000003" / "0001.png"
    strip = bad / "regions" / "id_00000003" / "0001.jpg"
    if damage == "class_25":
        arr = np.asarray(Image.open(mask)).copy()
        arr[5, 5] = 25
        Image.fromarray(arr).save(mask)
        path, match = mask, "class index 25 is outside CelebAMask-HQ's 0-18"
    elif damage == "missing_regions":
        strip.unlink()
        path, match = strip, "missing region crops"
    elif damage == "map_size":
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)
        path, match = mask, "class map is 32x32 but its image is 64x64"
    else:
        Image.fromarray(np.zeros((64, 300, 3), np.uint8)).save(strip, format="JPEG")
        path, match = strip, "region strip is 300x64"
    err = _refused(cli, "train", "segtex", "--data", bad, "--run", tmp_path / "r", match=match)
    assert str(path) in err


def test_texture_without_segmap_is_refused(cli, world, tmp_path):
    _refused(cli, "train", "segtex", "--data", world, "--run", tmp_path / "r", "--stage", "texture",
             match="stage 'segmap' has not finished")
    _refused(cli, "train", "segtex", "--data", world, "--run", tmp_path / "q", "-o", "feature_net=vgg",
             match="-o feature_net=vgg needs -o vgg_path=FILE")
    _refused(cli, "train", "segtex", "--data", world, "--run", tmp_path / "p", "-o", "vgg_path=/nowhere/vgg19.pth",
             match="/nowhere/vgg19.pth: no such VGG-19 weights file")


def test_a_local_vgg19_file_serves_the_perceptual_loss_and_is_recorded(world, tmp_path):
    from fsbench.data import FaceDataset
    from fsbench.generators.segtex.losses import VGG19Features
    from fsbench.hashing import sha256_of
    from fsbench.runs import Run, train_generator

    torch.manual_seed(0)
    vgg = tmp_path / "vgg19.pth"
    torch.save(VGG19Features().state_dict(), vgg)  # torchvision's key layout, random weights
    overrides = {**MICRO, "vgg_path": str(vgg)}
    train_generator(SegTex(), FaceDataset.open(world), tmp_path / "r", "tiny", overrides, stage="segmap",
                    show_progress=False)
    extra = Run.open(tmp_path / "r", SegTex()).load("segmap")["extra"]
    assert extra["feature_net"] == "vgg19" and extra["vgg_sha256"] == sha256_of(vgg)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["config"]["vgg_path"] == str(vgg)

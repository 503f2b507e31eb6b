"""The FID Inception-v3: layer names and shapes of the published weights file, strict loading,
output shapes, the FID-specific pooling, resizing, and the errors for missing or wrong weights.

The published weights cannot be downloaded here, so every test uses random-init weights
saved in the same layout; the key names and shapes checked below are those of
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsbench.errors import CheckpointError, UsageError
from fsbench.plugins.embedders import inception as inc
from fsbench.plugins.embedders._inception_net import FIDInceptionV3, _avg3


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / inc.WEIGHTS_FILE
    torch.save(FIDInceptionV3().state_dict(), path)
    return path


def test_state_dict_layout():
    net = FIDInceptionV3()
    sd = net.state_dict()
    # 94 BasicConv2d x (conv weight + 5 BN entries) + fc weight and bias
    assert len(sd) == 94 * 6 + 2
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    documented = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7dbl_5.conv.weight": (192, 128, 1, 7),
        "Mixed_6e.branch7x7_3.conv.weight": (192, 192, 7, 1),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for key, shape in documented.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in sd)
    assert net.Conv2d_1a_3x3.bn.eps == 0.001 and net.Conv2d_1a_3x3.conv.bias is None


def test_fid_pooling_variants():
    # count_include_pad=False: a constant map stays constant at the borders too.
    ones = torch.ones(1, 2, 5, 5)
    assert torch.equal(_avg3(ones), ones)
    net = FIDInceptionV3()
    assert net.Mixed_7b.max_pool is False and net.Mixed_7c.max_pool is True


def test_strict_round_trip_and_features(weights):
    emb = inc.InceptionEmbedder(option=str(weights))
    model = inc.load_fid_inception(weights)
    reloaded = torch.load(weights, weights_only=True)
    for key in ("Mixed_6c.branch1x1.conv.weight", "fc.bias"):
        assert torch.equal(model.state_dict()[key], reloaded[key])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 64, 48, 3), dtype=np.uint8)
    feats = emb.embed(images)
    assert feats.shape == (2, 2048) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and (feats >= 0).all()  # average of ReLU outputs
    assert emb.cache_key() == f"inception-bilinear-{inc.sha256_of(weights)[:12]}"
    assert inc.InceptionEmbedder(option=f"clean,{weights}").cache_key().startswith("inception-clean-")


def test_resize_modes():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(1, 40, 30, 3), dtype=np.uint8)
    bil = inc.resize_batch(img, "bilinear")
    clean = inc.resize_batch(img, "clean")
    assert bil.shape == clean.shape == (1, 3, 299, 299)
    assert float(bil.min()) >= 0 and float(clean.max()) <= 1
    assert not torch.allclose(bil, clean)  # different filters
    same = rng.integers(0, 256, size=(1, 299, 299, 3), dtype=np.uint8)
    # bilinear to the same size is the identity, as in pytorch-fid
    assert torch.allclose(inc.resize_batch(same, "bilinear")[0], torch.from_numpy(same[0]).permute(2, 0, 1) / 255.0)
    with pytest.raises(UsageError, match="unknown resize"):
        inc.resize_batch(same, "lanczos")


def test_missing_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(inc.ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(CheckpointError) as info:
        inc.InceptionEmbedder().cache_key()
    msg = str(info.value)
    assert inc.WEIGHTS_FILE in msg and "FSBENCH_INCEPTION" in msg and "--inception" in msg and "fd:dlib" in msg
    monkeypatch.setenv(inc.ENV_VAR, str(tmp_path))  # a folder without the file
    with pytest.raises(CheckpointError, match=f"{inc.WEIGHTS_FILE}: not found"):
        inc.InceptionEmbedder().weights_id()


def test_env_var_folder(weights, monkeypatch):
    monkeypatch.setenv(inc.ENV_VAR, str(weights.parent))
    assert inc.InceptionEmbedder().resolve_weights() == weights


def test_wrong_network_and_garbage(tmp_path):
    other = tmp_path / "resnet.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).state_dict(), other)
    with pytest.raises(CheckpointError, match="is not the FID Inception-v3 network.*missing keys"):
        inc.load_fid_inception(other)
    shaped = tmp_path / "shape.pth"
    sd = FIDInceptionV3().state_dict()
    sd["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(sd, shaped)
    with pytest.raises(CheckpointError, match="wrong shape \\(e.g. fc.weight\\)"):
        inc.load_fid_inception(shaped)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch weights file"):
        inc.load_fid_inception(junk)
    with pytest.raises(UsageError, match="neither a resize"):
        inc.InceptionEmbedder(option="bicubic")


def test_stats_and_fid_commands_with_inception(weights, folder, cli, tmp_path):
    a = folder("a", ids=1, per_id=2, size=24, seed=0)
    b = folder("b", ids=1, per_id=2, size=24, seed=1)
    s = cli.json("stats", a, "--out", tmp_path / "a.npz", "--inception", weights)
    key = f"inception-bilinear-{inc.sha256_of(weights)[:12]}"
    assert s["space"] == key and s["dim"] == 2048 and s["n"] == 2
    assert any("at least 2049 samples" in n for n in s["notes"])
    out = cli.json("fid", tmp_path / "a.npz", b, "--features", f"inception:{weights}")
    assert out["space"] == key and out["fid"] >= 0
    # the same statistics under clean-fid's resize are another feature space
    r = cli("fid", tmp_path / "a.npz", b, "--features", "inception:clean", "--inception", weights)
    assert r.exit_code == 2 and "inception-clean-" in r.stderr

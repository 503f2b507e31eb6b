"""Face embedders: iresnet (torch), insightface (ONNX) and dlib.

The IResNet test builds its own insightface-layout network here, from the layer names in
REFERENCE.md ("Backbones") and independently of fsbench.nn.iresnet, and checks that the
embedder loads its state_dict with strict=True and computes the same embeddings.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fsbench.errors import CheckpointError, UsageError
from fsbench.plugins.embedders import dlib as dlib_mod
from fsbench.plugins.embedders.insightface import InsightFaceEmbedder
from fsbench.plugins.embedders.iresnet import IResNetEmbedder, parse_spec

# --------------------------------------------------------------------------- an independent IResNet


class RefBlock(nn.Module):
    """bn1 -> conv1 (3x3, s1) -> bn2 -> prelu -> conv2 (3x3, stride) -> bn3 (+ downsample)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class RefIResNet(nn.Module):
    def __init__(self, blocks=(2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
            layers = [RefBlock(cin, planes, 2)] + [RefBlock(planes, planes, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            cin = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512, eps=1e-5)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.dropout(torch.flatten(self.bn2(x), 1))))


@pytest.fixture(scope="module")
def ref_r18(tmp_path_factory) -> tuple[RefIResNet, Path]:
    """An r18 with randomised weights AND BatchNorm statistics, saved as a backbone.pth."""
    torch.manual_seed(0)
    model = RefIResNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, nn.Conv2d):
                m.weight.mul_(0.5)
    model.eval()
    path = tmp_path_factory.mktemp("w") / "backbone.pth"
    torch.save(model.state_dict(), path)
    return model, path


def faces(n: int, size: int = 112, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def reference_embed(model: nn.Module, images: np.ndarray, flip: bool = False) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        e = model(x)
        if flip:
            e = e + model(torch.flip(x, dims=[3]))
    return torch.nn.functional.normalize(e, dim=1).numpy()


# --------------------------------------------------------------------------- iresnet


def test_reference_layout_has_the_documented_key_count(ref_r18):
    assert len(ref_r18[0].state_dict()) == 187  # REFERENCE.md: r18 has 187 entries


def test_iresnet_loads_independent_backbone_strictly_and_matches(ref_r18):
    model, path = ref_r18
    imgs = faces(2)
    emb = IResNetEmbedder(f"r18:{path}")
    out = emb.embed(imgs)
    assert out.dtype == np.float32 and out.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, reference_embed(model, imgs), atol=2e-4)
    # architecture read from the weights when not named; flip TTA = sum of both, normalised
    flipped = IResNetEmbedder(f"{path}:flip").embed(imgs)
    np.testing.assert_allclose(flipped, reference_embed(model, imgs, flip=True), atol=2e-4)
    assert emb.cache_key().startswith("iresnet-r18-") and "noflip" in emb.cache_key()
    assert len(emb.weights_id()) == 12


def test_iresnet_resizes_other_sizes_with_area(ref_r18):
    import cv2

    model, path = ref_r18
    big = faces(1, size=224, seed=3)
    small = np.stack([cv2.resize(im, (112, 112), interpolation=cv2.INTER_AREA) for im in big])
    np.testing.assert_allclose(IResNetEmbedder(str(path)).embed(big), reference_embed(model, small), atol=2e-4)


def test_iresnet_loads_fsbench_checkpoints(tmp_path):
    emb = IResNetEmbedder("r4:random:3")
    sd = emb.model.state_dict()
    imgs = faces(1)
    want = emb.embed(imgs)
    for i, payload in enumerate(
        [{"format": "fsbench-checkpoint-1", "model": sd, "config": {}}, {"backbone": sd},
         {"module." + k: v for k, v in sd.items()}]
    ):
        p = tmp_path / f"ck{i}.pth"
        torch.save(payload, p)
        np.testing.assert_allclose(IResNetEmbedder(str(p)).embed(imgs), want, atol=1e-6)


def test_iresnet_loads_an_fr_run_folder(tmp_path):
    """`fsbench fr train` writes backbone.pth + config.json; a small non-standard model here."""
    import json

    from fsbench.nn.iresnet import get_model
    from fsbench.train.data import normalize, resize_uint8

    torch.manual_seed(0)
    model = get_model("r4", num_features=16, input_size=32, width=8).eval()
    run = tmp_path / "run"
    run.mkdir()
    torch.save(model.state_dict(), run / "backbone.pth")
    (run / "config.json").write_text(json.dumps({"network": "r4", "input_size": 32, "width": 8, "embedding_size": 16}))
    emb = IResNetEmbedder(str(run))
    assert emb.dim == 16 and emb.input_size == (32, 32) and "bilinear-aa32" in emb.cache_key()
    imgs = faces(3)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model(normalize(torch.from_numpy(resize_uint8(imgs, 32)))), dim=1)
    np.testing.assert_allclose(emb.embed(imgs), want.numpy(), atol=1e-5)


def test_iresnet_bad_weights_are_clear_errors(tmp_path, ref_r18):
    _, path = ref_r18
    with pytest.raises(CheckpointError, match="no such weights file.*backbone.pth"):
        IResNetEmbedder(str(tmp_path / "missing.pth"))
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="unreadable or truncated"):
        IResNetEmbedder(str(trunc))
    other = tmp_path / "linear.pth"
    torch.save(nn.Linear(4, 2).state_dict(), other)
    with pytest.raises(CheckpointError, match="is not an IResNet backbone"):
        IResNetEmbedder(str(other))
    with pytest.raises(CheckpointError, match="holds an IResNet r18, not the r50"):
        IResNetEmbedder(f"r50:{path}")
    sd = torch.load(path, weights_only=True)
    sd.pop("layer2.0.bn3.running_var")
    sd["extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save(sd, broken)
    with pytest.raises(CheckpointError, match="does not fit IResNet r18"):
        IResNetEmbedder(str(broken))
    with pytest.raises(UsageError, match="needs weights"):
        IResNetEmbedder(None)


def test_iresnet_spec_syntax():
    assert parse_spec("r18:random:7") == {"arch": "r18", "path": None, "random": True, "seed": 7, "flip": False}
    assert parse_spec("r50:/a/b.pth:flip")["flip"] is True
    assert parse_spec("/a/b.pth")["arch"] is None
    with pytest.raises(UsageError, match="needs an architecture"):
        parse_spec("random:1")


def test_random_iresnet_is_named_random_and_seeded():
    a, b, c = IResNetEmbedder("r4:random:0"), IResNetEmbedder("r4:random:0"), IResNetEmbedder("r4:random:1")
    assert "RANDOM" in a.cache_key() and "random" in a.description.lower()
    imgs = faces(1)
    np.testing.assert_array_equal(a.embed(imgs), b.embed(imgs))
    assert np.abs(a.embed(imgs) - c.embed(imgs)).max() > 1e-3


def test_serfiq_matches_naive_and_ignores_batching():
    emb = IResNetEmbedder("r4:random:0")
    imgs = faces(2, seed=5)
    ids = np.array([10, 11])
    m, p, seed = 6, 0.5, 4
    q = emb.serfiq(imgs, m=m, p=p, seed=seed, ids=ids)
    # the same images one at a time, in another order: same scores
    alone = [emb.serfiq(imgs[k : k + 1], m=m, p=p, seed=seed, ids=ids[k : k + 1])[0] for k in (1, 0)]
    assert [alone[1], alone[0]] == pytest.approx(q.tolist(), abs=1e-12)
    # naive: the documented masks, m passes through dropout + fc + features, then the formula
    with torch.no_grad():
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
        flat = emb.model.forward_features((x - 0.5) / 0.5)
        for k in range(2):
            state = np.random.SeedSequence([seed, int(ids[k])]).generate_state(1)[0]
            keep = torch.rand((m, flat.shape[1]), generator=torch.Generator().manual_seed(int(state))) >= p
            outs = []
            for j in range(m):
                e = emb.model.features(emb.model.fc((flat[k] * keep[j] / (1 - p)).unsqueeze(0)))[0].double()
                outs.append(e / e.norm())
            dists = [float((outs[a] - outs[b]).norm()) for a in range(m) for b in range(a + 1, m)]
            expected = 2 / (1 + math.exp(sum(dists) / len(dists)))
            assert q[k] == pytest.approx(expected, rel=1e-6)
    assert q[0] != q[1]  # different images, different scores


# --------------------------------------------------------------------------- insightface


def tiny_onnx(path: Path, side: int = 112, dim: int = 8, seed: int = 0) -> np.ndarray:
    """A recognition-shaped ONNX graph (flatten + matmul) built by hand; returns its weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(size=(3 * side * side, dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["data"], ["flat"], name="flatten0", axis=1),
         helper.make_node("MatMul", ["flat", "W"], ["emb"], name="fc")],
        "tiny",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", dim])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return w


def test_insightface_onnx_embeds_like_the_graph_says(tmp_path):
    w = tiny_onnx(tmp_path / "rec.onnx")
    emb = InsightFaceEmbedder(str(tmp_path / "rec.onnx"))
    assert emb.dim == 8 and emb.input_size == (112, 112)
    imgs = faces(3)
    out = emb.embed(imgs)
    # arcface_torch exports: RGB, (x - 127.5) / 127.5, NCHW
    x = ((imgs.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 127.5).reshape(3, -1) @ w
    np.testing.assert_allclose(out, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-5)
    assert emb.failures() == {}
    assert "aligned" in emb.cache_key()


def test_insightface_bad_models(tmp_path):
    with pytest.raises(CheckpointError, match="no such ONNX file; copy a recognition model"):
        InsightFaceEmbedder(str(tmp_path / "w600k_r50.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        InsightFaceEmbedder(str(junk))
    tiny_onnx(tmp_path / "small.onnx", side=64)
    with pytest.raises(CheckpointError, match="not a recognition model"):
        InsightFaceEmbedder(str(tmp_path / "small.onnx"))
    with pytest.raises(UsageError, match="unknown part"):
        InsightFaceEmbedder(str(tmp_path / "rec.onnx") + ",foo=1")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-image deprecation inside norm_crop
def test_insightface_detect_mode_aligns_with_norm_crop(tmp_path, monkeypatch):
    """Detect mode: largest face's 5 landmarks -> norm_crop; no face -> a reported failure.
    (A stand-in detector: no detector ONNX is available offline.)"""
    from insightface.utils import face_align

    tiny_onnx(tmp_path / "rec.onnx")
    emb = InsightFaceEmbedder(str(tmp_path / "rec.onnx"))
    kps = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]], np.float32) * 1.5

    class FakeDetector:
        def detect(self, img, max_num=0):
            if img.mean() < 1:  # black image: nobody there
                return np.empty((0, 5), np.float32), np.empty((0, 5, 2), np.float32)
            boxes = np.array([[0, 0, 10, 10, 0.9], [20, 20, 160, 160, 0.8]], np.float32)
            return boxes, np.stack([kps / 10, kps])

    emb.det, emb.aligned_input = FakeDetector(), False
    imgs = np.concatenate([faces(2, size=168), np.zeros((1, 168, 168, 3), np.uint8)])
    out = emb.embed(imgs)
    assert emb.failures() == {2: "no face found by the insightface detector"}
    want = InsightFaceEmbedder(str(tmp_path / "rec.onnx"))
    crops = [face_align.norm_crop(im[:, :, ::-1], landmark=kps, image_size=112)[:, :, ::-1] for im in imgs[:2]]
    np.testing.assert_allclose(out[:2], want.embed(np.stack(crops)), atol=1e-5)
    assert np.all(out[2] == 0)


# --------------------------------------------------------------------------- dlib

needs_dlib = pytest.mark.skipif(not dlib_mod.weights_available(), reason="face_recognition_models weights not installed")


def sample_faces() -> tuple[np.ndarray, np.ndarray]:
    """Two real photographs that ship with matplotlib and scikit-image (Grace Hopper, Eileen Collins)."""
    import matplotlib.cbook
    from PIL import Image

    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    try:
        import skimage.data

        other = Image.fromarray(skimage.data.astronaut())
    except Exception:  # pragma: no cover - scikit-image absent
        pytest.skip("scikit-image sample image not available")
    return np.asarray(hopper.resize((400, 400))), np.asarray(other.resize((400, 400)))


@needs_dlib
def test_dlib_detect_reports_images_without_faces():
    hopper, astronaut = sample_faces()
    noise = faces(1, size=400)[0]
    # 2 workers get images [0, 2) and [2, 4): the failure sits in the second chunk
    emb = dlib_mod.DlibEmbedder("detect", workers=2)
    try:
        out = emb.embed(np.stack([hopper, astronaut, hopper[:, ::-1], noise]))
    finally:
        emb.close()
    assert out.shape == (4, 128) and out.dtype == np.float32
    assert emb.failures() == {3: "no face found by dlib's frontal detector"}
    assert np.all(out[3] == 0)
    np.testing.assert_allclose(np.linalg.norm(out[:3], axis=1), 1.0, atol=1e-5)
    same, other = float(out[0] @ out[2]), float(out[0] @ out[1])
    assert same > 0.98 and same > other  # the mirrored photo is the same person


@needs_dlib
def test_dlib_aligned_and_workers_agree():
    hopper, _ = sample_faces()
    crops = np.concatenate([faces(5, size=200, seed=1), hopper[None, 100:300, 100:300]])
    serial = dlib_mod.DlibEmbedder("aligned", workers=1)
    parallel = dlib_mod.DlibEmbedder("aligned", workers=2)
    try:
        a, b = serial.embed(crops), parallel.embed(crops)
    finally:
        parallel.close()
    assert serial.failures() == {} and parallel.failures() == {}
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert serial.cache_key().startswith("dlib-aligned-resize150-")


def test_dlib_missing_weights_and_bad_mode(monkeypatch):
    with pytest.raises(UsageError, match="unknown mode"):
        dlib_mod.DlibEmbedder("sideways")
    monkeypatch.setattr(dlib_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="face-recognition-models"):
        dlib_mod.DlibEmbedder("aligned")


def test_embedders_are_registered():
    from fsbench.plugins.embedders import dlib, insightface, iresnet

    names = {c.name for m in (dlib, insightface, iresnet) for c in m.fsbench_register_embedders()}
    assert names == {"dlib", "insightface", "iresnet"}

"""SegTex's networks and losses read beside the paper: AdaIN (Eq. 1), SPADE (Eq. 6), the Gram
matrix (Eq. 7), the segmentation loss (Eq. 8) and Eq. 9's least squares and feature matching
against naive references; every network's shapes at `tiny`; parameter counts and FLOPs at
`paper` against REFERENCE "Sizes and costs"; the VGG-19 loader; gradients to all six encoders."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fsbench.errors import CheckpointError
from fsbench.generators.segtex.losses import (
    VGG_LAYER_WEIGHTS,
    DiscriminatorFeatures,
    SegmapLossWeights,
    TextureLossWeights,
    VGG19Features,
    bce_d_loss,
    bce_g_loss,
    feature_matching_loss,
    feature_pair,
    gram,
    lsgan_d_loss,
    lsgan_g_loss,
    multiscale_g_loss,
    perceptual_loss,
    region_mask,
    segmap_total,
    segmentation_loss,
    style_loss,
    texture_total,
)
from fsbench.generators.segtex.segmap_net import SegmapDiscriminator, SegmapGenerator, adain, render_map
from fsbench.generators.segtex.sizes import SIZES
from fsbench.generators.segtex.texture_net import SPADE, MultiscaleDiscriminator, SPADEGenerator, TextureNet

TINY, PAPER = SIZES["tiny"], SIZES["paper"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _onehot(b: int, k: int, s: int, seed: int = 0) -> torch.Tensor:
    labels = torch.randint(0, k, (b, s, s), generator=torch.Generator().manual_seed(seed))
    return F.one_hot(labels, k).permute(0, 3, 1, 2).float()


# --------------------------------------------------------------------------- AdaIN (Eq. 1) and SPADE (Eq. 6)


def test_adain_matches_numpy_and_takes_y_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (2, 4, 5, 6)).astype(np.float64)
    y = rng.normal(-1.0, 0.5, (2, 4, 7, 3)).astype(np.float64) * rng.uniform(0.5, 4, (1, 4, 1, 1))
    eps = 1e-5
    mu_x, sd_x = x.mean((2, 3), keepdims=True), np.sqrt(x.var((2, 3), keepdims=True) + eps)
    mu_y, sd_y = y.mean((2, 3), keepdims=True), np.sqrt(y.var((2, 3), keepdims=True) + eps)
    expected = sd_y * (x - mu_x) / sd_x + mu_y
    out = adain(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.mean((2, 3)), y.mean((2, 3)), atol=1e-10)  # y's per-channel mean
    np.testing.assert_allclose(out.std((2, 3)), y.std((2, 3)), rtol=1e-4)  # and deviation, to the epsilon
    with pytest.raises(ValueError, match="same batch and channels"):
        adain(torch.zeros(1, 4, 2, 2), torch.zeros(1, 8, 2, 2))


def _nearest(seg: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Naive nearest resize: output (i, j) reads input (floor(i H / h), floor(j W / w))."""
    out = torch.empty(seg.shape[0], seg.shape[1], h, w, dtype=seg.dtype)
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = seg[:, :, i * seg.shape[2] // h, j * seg.shape[3] // w]
    return out


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_spade_matches_a_naive_implementation(norm):
    torch.manual_seed(0)
    layer = SPADE(channels=3, label_nc=4, hidden=5, norm=norm).double().train()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64) * 2 + 1
    seg = _onehot(2, 4, 8).double()
    dims = (0, 2, 3) if norm == "batch" else (2, 3)
    mean, var = x.mean(dims, keepdim=True), x.var(dims, keepdim=True, unbiased=False)
    normed = (x - mean) / torch.sqrt(var + 1e-5)  # parameter-free
    small = _nearest(seg, 4, 4)
    h = F.relu(F.conv2d(small, layer.shared[0].weight, layer.shared[0].bias, padding=1))
    gamma = F.conv2d(h, layer.gamma.weight, layer.gamma.bias, padding=1)
    beta = F.conv2d(h, layer.beta.weight, layer.beta.bias, padding=1)
    expected = (1 + gamma) * normed + beta  # our reading of Eq. 6's gamma (SPADE's code)
    torch.testing.assert_close(layer(x, seg), expected, rtol=1e-9, atol=1e-9)
    for conv in (layer.gamma, layer.beta):  # gamma = beta = 0: plain normalisation, the start we chose
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    torch.testing.assert_close(layer(x, seg), normed, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- losses by hand


def test_gram_matches_a_naive_loop_in_float32():
    f = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    b, c, h, w = f.shape
    naive = torch.zeros(b, c, c, dtype=torch.float64)
    for n in range(b):
        for i in range(c):
            for j in range(c):
                naive[n, i, j] = sum(float(f[n, i, y, x]) * float(f[n, j, y, x]) for y in range(h) for x in range(w))
    naive /= c * h * w
    torch.testing.assert_close(gram(f).double(), naive, rtol=1e-5, atol=1e-6)
    assert gram(f.half()).dtype == torch.float32
    g = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(2))
    expected = ((gram(f) - gram(g)) ** 2).mean()
    torch.testing.assert_close(style_loss([f, f], [g, g], weights=[1.0, 0.5]), 1.5 * expected)


def test_segmentation_loss_by_hand():
    recon = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    target = torch.tensor([[[[0.0, 0.0], [1.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])
    # ((1 - 0) 1)^2 + 0 + ((3 - 1) 0.5)^2 + ((4 - 0) 1)^2 = 1 + 1 + 16, over 4 elements
    assert segmentation_loss(recon, target, mask).item() == pytest.approx(18 / 4)
    rgb = recon.expand(1, 3, 2, 2)  # a (B, 1, H, W) mask weights every channel alike
    assert segmentation_loss(rgb, target.expand(1, 3, 2, 2), mask).item() == pytest.approx(18 / 4)
    onehot = _onehot(1, 19, 2)
    with pytest.raises(ValueError, match="region_mask"):
        segmentation_loss(rgb, rgb, onehot)
    assert region_mask(onehot, range(19)).eq(1).all()  # every pixel has exactly one class


def test_feature_matching_and_least_squares_by_hand():
    real = [[torch.zeros(1, 1, 1, 2, requires_grad=True), torch.full((1, 1, 1, 1), 9.0)],
            [torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)]]
    fake = [[torch.tensor([[[[1.0, 2.0]]]], requires_grad=True), torch.full((1, 1, 1, 1), 0.5)],
            [torch.full((1, 1, 1, 1), 3.0), torch.ones(1, 1, 1, 1)]]
    # scale 1: mean(|1 - 0|, |2 - 0|) = 1.5, scale 2: |3 - 1| = 2; the logits are not features; 10 / num_D = 5
    fm = feature_matching_loss(real, fake, weight=10.0)
    assert fm.item() == pytest.approx(5 * (1.5 + 2))
    fm.backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None  # the real side is a constant
    # generator: 1/2 (0.5 - 1)^2 + 1/2 (1 - 1)^2; discriminator: 1/2 (9 - 1)^2 + 1/2 0.5^2 + 1/2 (0 - 1)^2 + 1/2 1^2
    assert lsgan_g_loss(fake).item() == pytest.approx(0.125)
    assert lsgan_d_loss(real, fake).item() == pytest.approx(32 + 0.125 + 0.5 + 0.5)
    assert multiscale_g_loss(real, fake, 10.0).item() == pytest.approx(0.125 + 17.5)
    zero = torch.zeros(3)
    assert bce_d_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert bce_g_loss(torch.full((3,), 20.0)).item() == pytest.approx(0.0, abs=1e-8)


def test_perceptual_loss_and_the_totals_by_hand():
    a, b = torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    assert perceptual_loss([a] * 5, [b] * 5).item() == pytest.approx(sum(VGG_LAYER_WEIGHTS))
    assert perceptual_loss([2 * a], [b], weights=[0.5]).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="pass weights="):
        perceptual_loss([a] * 8, [b] * 8)
    one = torch.tensor(1.0)
    assert segmap_total(one, 2 * one, 3 * one, SegmapLossWeights(l1=1, perc=10, adv=100)).item() == 321
    w = TextureLossWeights(style=1, seg=10, perc=100, l1=1000, d=10000)
    assert texture_total(one, one, one, one, one, w).item() == 11111
    with pytest.raises(TypeError):
        SegmapLossWeights(lambda_l1=1)  # an unknown weight name is refused


# --------------------------------------------------------------------------- networks at tiny size


def test_tiny_networks_shapes_and_sizes():
    torch.manual_seed(0)
    s = TINY.segmap.image_size
    parts = [torch.rand(2, 3, s, s) * 2 - 1 for _ in range(3)]
    seg_gen, seg_d = SegmapGenerator(TINY.segmap), SegmapDiscriminator(TINY.segmap)
    logits = seg_gen(*parts)
    assert logits.shape == (2, 19, s, s)
    assert seg_gen.fuse(*parts).shape == (2, 2 * TINY.segmap.base, s // 4, s // 4)
    d_out = seg_d(logits.softmax(1))
    assert [o.shape[1] for o in d_out] == [16, 32, 64, 128, 1]
    assert render_map(logits.softmax(1), torch.rand(19, 3)).shape == (2, 3, s, s)

    t = TINY.texture
    seg = _onehot(2, t.label_nc, t.image_size)
    crops = [torch.rand(2, 3, t.image_size, t.image_size) * 2 - 1 for _ in range(5)]
    net, disc = TextureNet(t), MultiscaleDiscriminator(t)
    assert net.blended(seg, *crops).shape == (2, 3, t.image_size // 4, t.image_size // 4)
    img = net(seg, *crops)
    assert img.shape == (2, 3, t.image_size, t.image_size) and img.abs().max() <= 1
    outs = disc(seg, img)
    assert len(outs) == 2 and all(len(o) == 5 for o in outs)
    assert outs[0][-1].shape == (2, 1, 7, 7) and outs[1][-1].shape == (2, 1, 5, 5)  # padding 2 grows the map
    assert [f.shape[1] for f in outs[0]] == [16, 32, 64, 128, 1]
    feats = functools.partial(DiscriminatorFeatures(disc), seg)(img)
    assert len(feats) == 8  # 2 scales x 4 layers, logits left out

    counts = {"segmap": _params(seg_gen), "segmap_d": _params(seg_d), "texture": _params(net),
              "spade": _params(net.generator), "texture_d": _params(disc)}
    flops = {"segmap": seg_gen.flops(), "texture": net.flops(), "texture_d": disc.flops()}
    print("tiny parameters", counts, "GFLOP", {k: round(v / 1e9, 3) for k, v in flops.items()})
    # REFERENCE: a 32 px texture network (small encoders, SPADE ngf 16, 3 upsampling blocks) ~1.1 M
    assert counts == {"segmap": 96_611, "segmap_d": 178_961, "texture": 1_073_694, "spade": 987_507,
                      "texture_d": 359_458}
    assert abs(counts["texture"] - 1.1e6) / 1.1e6 < 0.05


def test_gradients_reach_all_six_encoders_and_the_blending_weights():
    torch.manual_seed(0)
    t = TINY.texture
    net = TextureNet(t)
    seg = _onehot(2, t.label_nc, t.image_size)
    crops = [torch.rand(2, 3, t.image_size, t.image_size) * 2 - 1 for _ in range(5)]
    out = net(seg, *crops)
    (out * torch.randn_like(out)).sum().backward()
    for name, enc in net.encoders.items():
        grad = enc.net[0].weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert net.blend.logits.grad is not None and net.blend.logits.grad.abs().sum() > 0
    assert net.blend.weights.sum().item() == pytest.approx(1.0)


# --------------------------------------------------------------------------- paper size (meta device: no memory)


def _meta(build):
    with torch.device("meta"):
        return build()


def test_paper_parameter_counts_match_reference():
    """REFERENCE "Sizes and costs": SPADE at 256 px, ngf 64: generator 92.1 M, discriminator 5.5 M,
    about 273 GFLOP a forward. Our SPADE layers read the 19-class one-hot map: 18 SPADE layers x 16
    more input channels x 128 x 9 = 0.33 M more (0.3 %); with a 3-channel map the counts agree to
    0.05 % and 0.2 %. The discriminator follows SPADE's layer for layer (5.57 M, 5.53 M with a
    3-channel map): REFERENCE's 5.5 M is two significant figures, hence 1.5 %."""
    t = PAPER.texture
    gen = _meta(lambda: SPADEGenerator(t))
    net, disc = _meta(lambda: TextureNet(t)), _meta(lambda: MultiscaleDiscriminator(t))
    seg_gen, seg_d = _meta(lambda: SegmapGenerator(PAPER.segmap)), _meta(lambda: SegmapDiscriminator(PAPER.segmap))
    t3 = dataclasses.replace(t, label_nc=3)
    gen3, disc3 = _meta(lambda: SPADEGenerator(t3)), _meta(lambda: MultiscaleDiscriminator(t3))
    counts = {"spade": _params(gen), "texture": _params(net), "texture_d": _params(disc), "spade_3": _params(gen3),
              "texture_d_3": _params(disc3), "segmap": _params(seg_gen), "segmap_d": _params(seg_d)}
    print("paper parameters", counts)
    assert counts == {"spade": 92_391_363, "texture": 96_865_486, "texture_d": 5_566_594, "spade_3": 92_059_587,
                      "texture_d_3": 5_533_826, "segmap": 5_819_027, "segmap_d": 2_780_225}
    assert counts["spade"] - counts["spade_3"] == 18 * 16 * 128 * 9  # the map's channels, nothing else
    assert abs(counts["spade"] - 92.1e6) / 92.1e6 < 0.005
    assert abs(counts["spade_3"] - 92.1e6) / 92.1e6 < 0.0005
    assert abs(counts["texture_d"] - 5.5e6) / 5.5e6 < 0.015

    flops = {"spade": gen.flops(), "spade_3": gen3.flops(), "texture": net.flops(), "texture_d": disc.flops(),
             "segmap": seg_gen.flops(), "segmap_d": seg_d.flops()}
    print("paper GFLOP", {k: round(v / 1e9, 1) for k, v in flops.items()})
    assert abs(flops["spade_3"] - 273e9) / 273e9 < 0.01  # REFERENCE: about 273 GFLOP a forward


# --------------------------------------------------------------------------- VGG-19


TORCHVISION_KEYS = [f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28) for p in ("weight", "bias")]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    state = VGG19Features().state_dict()
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return path, state


def test_vgg19_loads_torchvision_keys_strictly(vgg_file):
    path, state = vgg_file
    assert list(state) == TORCHVISION_KEYS  # torchvision's names, nothing else (the buffers are not saved)
    net = VGG19Features.from_file(path)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    feats = net(x)
    assert [f.shape[1:] for f in feats] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2), (512, 1, 1)]
    assert all(not p.requires_grad for p in net.parameters())
    fr, ft = feature_pair(net, x.requires_grad_(), torch.zeros_like(x))
    (perceptual_loss(fr, ft) + style_loss(fr, ft)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # frozen, but the image gets gradients


def test_vgg19_takes_a_full_torchvision_file_and_refuses_damaged_ones(vgg_file, tmp_path):
    path, state = vgg_file
    full = dict(state, **{"features.30.weight": torch.zeros(1), "classifier.0.weight": torch.zeros(1)})
    torch.save(full, tmp_path / "full.pth")
    VGG19Features.from_file(tmp_path / "full.pth")  # torchvision's tail is dropped by name

    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        VGG19Features.from_file(tmp_path / "cut.pth")
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "cut.pth")) and "truncated" in message

    torch.save({k: v for k, v in state.items() if k != "features.28.bias"}, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="does not fit VGG-19") as err:
        VGG19Features.from_file(tmp_path / "short.pth")
    assert "\n" not in str(err.value) and "features.28.bias" in str(err.value)
    with pytest.raises(CheckpointError, match="no such"):
        VGG19Features.from_file(tmp_path / "absent.pth")

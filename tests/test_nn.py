"""IResNet layout (arcface_torch-compatible names and sizes) and the combined-margin head."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fsbench.errors import UsageError
from fsbench.nn.iresnet import get_model, is_standard, map_size
from fsbench.nn.margin import MARGINS, MarginHead, margin_logits

# --------------------------------------------------------------------------- IResNet


@pytest.mark.parametrize(
    ("name", "keys", "millions"),
    [("r18", 187, None), ("r50", 475, 43.59), ("r100", 925, 65.16)],
)
def test_key_and_parameter_counts_match_arcface_torch(name, keys, millions):
    with torch.device("meta"):  # no memory, no init cost
        model = get_model(name)
    sd = model.state_dict()
    assert len(sd) == keys
    assert tuple(sd["fc.weight"].shape) == (512, 512 * 7 * 7)
    assert tuple(sd["fc.bias"].shape) == (512,)
    assert "features.weight" in sd and "features.running_var" in sd
    assert "layer1.0.downsample.0.weight" in sd and "layer1.0.downsample.1.running_mean" in sd
    assert "layer1.1.downsample.0.weight" not in sd
    if millions is not None:
        total = sum(p.numel() for p in model.parameters())
        assert round(total / 1e6, 2) == millions


def test_r18_forward_shape_and_frozen_feature_scale():
    model = get_model("r18").eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert y.shape == (2, 512) and torch.isfinite(y).all()
    assert model.features.weight.requires_grad is False
    assert torch.equal(model.features.weight, torch.ones(512))
    assert is_standard("r18") and not is_standard("r18", width=16) and not is_standard("r4")


def test_state_dict_round_trip_strict():
    a, b = get_model("r4", width=8, input_size=32), get_model("r4", width=8, input_size=32)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(3, 3, 32, 32)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))
    with pytest.raises(RuntimeError):  # a different width is refused by strict loading
        get_model("r4", width=16, input_size=32).load_state_dict(a.state_dict(), strict=True)


def test_forward_features_and_head_split_for_serfiq():
    torch.manual_seed(0)
    model = get_model("r4", num_features=32, dropout=0.0, input_size=48, width=8).eval()
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        flat = model.forward_features(x)
        assert flat.shape == (4, 64 * map_size(48) ** 2) == (4, 64 * 9)
        assert torch.allclose(model.head(flat), model(x))
        # forced dropout in eval mode: stochastic, and the shared input is left untouched
        before = flat.clone()
        y1, y2 = model.head(flat, dropout=0.5), model.head(flat, dropout=0.5)
        assert not torch.allclose(y1, y2)
        assert torch.equal(flat, before)


_CHANNELS_LAST_STEP = """
import torch
from fsbench.nn.iresnet import get_model
from fsbench.train.data import normalize

torch.manual_seed(0)
pixels = torch.randint(0, 256, (16, 48, 48, 3), dtype=torch.uint8)
grads = []
for x in (pixels.float().permute(0, 3, 1, 2) / 127.5 - 1, normalize(pixels)):  # channels-last view, then NCHW
    torch.manual_seed(1)
    model = get_model("r4", num_features=16, input_size=48, width=8).train()
    model(x).square().sum().backward()
    grads.append(model.layer1[0].downsample[0].weight.grad)
assert normalize(pixels).is_contiguous()
torch.backends.mkldnn.enabled = False  # torch's own kernels: the reference
torch.manual_seed(1)
ref = get_model("r4", num_features=16, input_size=48, width=8).train()
ref(normalize(pixels)).square().sum().backward()
want = ref.layer1[0].downsample[0].weight.grad
for g in grads:
    # float32 sums in another order differ by ~2e-3 here; the bug gave gradients off by 100x
    assert float((g - want).abs().max() / want.abs().max()) < 2e-2, "wrong 1x1 shortcut gradient"
print("ok")
"""


def test_a_channels_last_batch_trains_the_tiny_shape_safely():
    """The `tiny` preset's shape (48 px, width 8) from a batch permuted out of (N, H, W, 3)
    pixels: oneDNN's channels-last 1x1 stride-2 backward-weights kernel segfaulted on AVX-512
    machines (fewer input channels than its block of 16), so `make demo` died there. Run in
    a subprocess, so that a crash fails this test rather than the whole session."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _CHANNELS_LAST_STEP], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_non_standard_sizes_and_errors():
    assert [map_size(s) for s in (112, 64, 56, 16)] == [7, 4, 4, 1]
    model = get_model("r4", num_features=16, input_size=56, width=4).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 56, 56)).shape == (1, 16)
    with pytest.raises(UsageError, match="unknown IResNet 'r51'"):
        get_model("r51")
    with pytest.raises(UsageError, match="too small"):
        get_model("r18", input_size=8)


# --------------------------------------------------------------------------- margin head


def naive_margin_logits(emb, weight, labels, s, m1, m2, m3):
    """Per-element loop with math.* (float64): the definition written out."""
    n, c = emb.shape[0], weight.shape[0]
    out = torch.zeros(n, c, dtype=torch.float64)
    for i in range(n):
        e = emb[i].double() / emb[i].double().norm()
        for j in range(c):
            w = weight[j].double() / weight[j].double().norm()
            cos = max(-1.0, min(1.0, float(e @ w)))
            if j == int(labels[i]):
                cos = math.cos(m1 * math.acos(cos) + m2) - m3
            out[i, j] = s * cos
    return out


def test_margins_hand_computed():
    # embedding (1, 0); prototype 0 at 60 degrees (cos 0.5), prototype 1 at 90 degrees (cos 0).
    emb = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[0.5, math.sqrt(3) / 2], [0.0, 2.0]])
    label = torch.tensor([0])
    head = MarginHead(2, 2, s=10.0, m1=1.0, m2=math.pi / 6, m3=0.0)
    head.weight.data.copy_(w)
    # ArcFace with m = 30 degrees moves the target to 90 degrees: logit 10 * cos(90) = 0
    assert torch.allclose(head(emb, label), torch.tensor([[0.0, 0.0]]), atol=1e-5)
    # CosFace m3 = 0.4: 10 * (0.5 - 0.4) = 1; the non-target stays 10 * 0
    assert torch.allclose(margin_logits(head.cosine(emb), label, 10.0, *MARGINS["cosface"]), torch.tensor([[1.0, 0.0]]),
                          atol=1e-5)
    # SphereFace-style m1 = 2: cos(120 degrees) = -0.5
    assert torch.allclose(margin_logits(head.cosine(emb), label, 10.0, 2.0, 0.0, 0.0), torch.tensor([[-5.0, 0.0]]), atol=1e-5)
    # plain softmax: scaled cosines, no margin
    assert torch.allclose(margin_logits(head.cosine(emb), label, 10.0, *MARGINS["softmax"]), torch.tensor([[5.0, 0.0]]),
                          atol=1e-6)
    # ArcFace m = 0.5, s = 64 (the published defaults)
    arc = MarginHead.named("arcface", 2, 2, s=64.0)
    arc.weight.data.copy_(w)
    assert arc(emb, label)[0, 0].item() == pytest.approx(64 * math.cos(math.pi / 3 + 0.5), abs=1e-4)


@pytest.mark.parametrize("kind", ["arcface", "cosface", "softmax"])
def test_margin_matches_naive_reference(kind):
    g = torch.Generator().manual_seed(1)
    emb, labels = torch.randn(6, 5, generator=g), torch.tensor([0, 3, 2, -1, 6, 1])
    head = MarginHead.named(kind, 4, 5, s=30.0, extra_prototypes=3)
    head.weight.data.copy_(torch.randn(7, 5, generator=g))
    got = head(emb, labels)
    want = naive_margin_logits(emb, head.weight.detach(), labels, 30.0, *MARGINS[kind])
    assert got.shape == (6, 7)
    assert torch.allclose(got.double(), want, atol=1e-4)


def test_margin_gradient_matches_autograd_of_reference():
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(5, 4, generator=g, dtype=torch.float64)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1])

    def ref(e, w):  # vectorised formula in float64
        cos = nn.functional.normalize(e, dim=1) @ nn.functional.normalize(w, dim=1).t()
        onehot = nn.functional.one_hot(labels, 3).bool()
        return 64 * torch.where(onehot, torch.cos(torch.acos(cos) + 0.5), cos)

    e1, w1 = emb.clone().requires_grad_(), w.clone().requires_grad_()
    nn.functional.cross_entropy(ref(e1, w1), labels).backward()
    head = MarginHead.named("arcface", 3, 4).double()
    head.weight.data.copy_(w)
    e2 = emb.clone().requires_grad_()
    nn.functional.cross_entropy(head(e2, labels), labels).backward()
    assert torch.allclose(e2.grad, e1.grad, atol=1e-6)
    assert torch.allclose(head.weight.grad, w1.grad, atol=1e-6)


def test_extra_prototypes_are_one_matrix():
    head = MarginHead.named("arcface", 10, 8, extra_prototypes=0)
    assert head.extra_prototypes == 0 and list(head.extra_labels) == []
    labels = head.add_prototypes(4)
    assert list(labels) == [10, 11, 12, 13] == list(head.extra_labels)
    assert head.weight.shape == (14, 8) and head.num_classes == 10
    init = torch.eye(8)[:2]
    assert list(head.add_prototypes(2, init=init)) == [14, 15]
    assert torch.equal(head.weight[14:16].detach(), init)
    # an embedding labelled with a virtual class gets the margin on that column
    e = torch.eye(8)[:1]
    logits = head(e, torch.tensor([14]))
    assert logits[0, 14].item() == pytest.approx(64 * math.cos(0.5), abs=1e-3)
    with pytest.raises(ValueError, match="expected"):
        head.add_prototypes(1, init=torch.zeros(2, 8))


def test_head_stays_float32_under_autocast():
    head = MarginHead.named("arcface", 5, 8)
    emb, labels = torch.randn(3, 8), torch.tensor([0, 1, 2])
    want = head(emb, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head(emb.bfloat16(), labels)
    assert got.dtype == torch.float32
    assert torch.allclose(got, head(emb.bfloat16().float(), labels))
    assert torch.allclose(got, want, atol=64 * 1e-2)

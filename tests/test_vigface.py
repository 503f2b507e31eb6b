"""VIGFace read beside the paper: the network's sizes, the schedule, DDIM and Eq. 9, the
virtual prototypes of Eq. 5-7 (their gradient, their spread), and the generator end to end on
a micro run: training both stages, sampling virtual and real identities, refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import micro_train, run_cli
from torch import nn
from torch.nn import functional as F

from fsbench.generators.vigface import VIGFace
from fsbench.generators.vigface.config import PRESETS, VIGFaceConfig
from fsbench.generators.vigface.diffusion import CosineSchedule, ddim_sample
from fsbench.generators.vigface.stages import fr_step, prototype_stats, virtual_embeddings
from fsbench.generators.vigface.uvit import UViT, UViTSize
from fsbench.nn.margin import MarginHead
from fsbench.options import parse

MICRO = {
    "fr_batch_size": 16, "fr_epochs": 2, "virtual_ids": 12, "width": 32, "depth": 3, "heads": 2, "batch_size": 8,
    "steps": 4, "diffusion_steps": 50, "checkpoint_every": 2, "workers": 0, "stats_every": 2, "fr_warmup_steps": 2,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


# --------------------------------------------------------------------------- the network


def test_paper_size_is_vit_b_read_as_u_vit_132m_parameters_180_gflop():
    cfg = parse(VIGFaceConfig, PRESETS["paper"], where="t")
    assert (cfg.width, cfg.depth, cfg.heads, cfg.patch, cfg.image_size) == (768, 13, 12, 4, 112)
    net = UViT(UViTSize(112, 4, 768, 13, 12, 512))
    params = sum(p.numel() for p in net.parameters())
    assert params == 132_119_940  # about 132 M with VIGFace's AdaLN (REFERENCE: sizes and costs)
    assert net.tokens == 784 and len(net.in_blocks) == len(net.out_blocks) == 6
    assert net.flops() == pytest.approx(180e9, rel=0.01)


def test_tiny_size_and_the_u_layout():
    net = UViT(UViTSize(32, 4, 96, 5, 4, 128))
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(0.83e6, rel=0.01)
    assert all(b.skip is None for b in net.in_blocks) and all(b.skip is not None for b in net.out_blocks)
    with pytest.raises(ValueError, match="not divisible by patch"):
        UViT(UViTSize(30, 4, 96, 5, 4, 128))


def test_adaln_starts_as_identity_so_the_condition_acts_only_once_trained():
    torch.manual_seed(0)
    net = UViT(UViTSize(16, 4, 32, 3, 2, 8)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 40.0])
    c = torch.randn(2, 8)
    assert torch.equal(net(x, t, c), net(x, t, torch.zeros_like(c)))  # zero-initialised modulation
    for block in [*net.in_blocks, net.mid_block, *net.out_blocks]:
        nn.init.normal_(block.ada[1].weight, std=0.1)
    assert not torch.allclose(net(x, t, c), net(x, t, torch.zeros_like(c)))
    # one sample's output does not depend on its batch-mates
    assert torch.allclose(net(x[:1], t[:1], c[:1]), net(x, t, c)[:1], atol=1e-5)


# --------------------------------------------------------------------------- diffusion


def test_cosine_schedule_matches_the_formula():
    sch = CosineSchedule(1000)
    f = lambda t: math.cos(((t / 1000) + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 1, 250, 500, 999):
        want = np.prod([min(1 - f(s + 1) / f(s), 0.999) * -1 + 1 for s in range(t + 1)])
        assert float(sch.alpha_bar[t]) == pytest.approx(want, rel=1e-5)
    assert (np.diff(sch.alpha_bar.numpy()) < 0).all() and float(sch.alpha_bar[-1]) < 1e-4
    assert sch.timesteps(4) == [999, 666, 333, 0] and sch.timesteps(1000) == list(range(999, -1, -1))


class FixedX0(nn.Module):
    """Predicts x0_c for conditioned rows and x0_u for zero-conditioned ones; counts calls."""

    def __init__(self, x0_c, x0_u):
        super().__init__()
        self.x0_c, self.x0_u, self.calls = x0_c, x0_u, []

    def forward(self, x, t, cond):
        self.calls.append(len(x))
        zero = (cond == 0).all(1).view(-1, 1, 1, 1)
        b = len(x) // 2
        return torch.where(zero, torch.cat([self.x0_u] * 2)[: len(x)], torch.cat([self.x0_c] * 2)[: len(x)]) if b else x


def test_ddim_with_guidance_is_eq_9_from_one_batched_forward():
    g = torch.Generator().manual_seed(0)
    x0_c, x0_u = torch.rand(3, 3, 4, 4, generator=g) * 0.6, -torch.rand(3, 3, 4, 4, generator=g) * 0.2
    model = FixedX0(x0_c, x0_u)
    out = ddim_sample(model, CosineSchedule(100), torch.randn(3, 3, 4, 4, generator=g), torch.ones(3, 5), 2.5, 7)
    assert torch.allclose(out, (2.5 * x0_c - 1.5 * x0_u).clamp(-1, 1), atol=1e-6)  # w x_c + (1 - w) x_u
    assert model.calls == [6] * 7  # 7 steps, each one forward of 2B rows (cond + uncond)


def test_ddim_step_is_the_deterministic_update():
    """One step from t to t' by hand: eps from x_t and x0, then sqrt(ab') x0 + sqrt(1 - ab') eps."""
    sch = CosineSchedule(10)
    x0 = torch.full((1, 3, 2, 2), 0.3)
    model = FixedX0(x0, x0)
    x_t = torch.randn(1, 3, 2, 2)
    ts = sch.timesteps(3)  # [9, 4 or 5, 0]
    a_t = sch.alpha_bar[ts[0]]
    eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    a1 = sch.alpha_bar[ts[1]]
    x1 = a1.sqrt() * x0 + (1 - a1).sqrt() * eps
    out = ddim_sample(model, sch, x_t, torch.ones(1, 2), 1.0, 2)  # 2 steps: t0 -> 0, returns x0
    assert torch.allclose(out, x0)
    assert torch.isfinite(x1).all()


# --------------------------------------------------------------------------- stage 1: virtual prototypes


def test_virtual_gradient_reaches_the_prototypes_never_the_backbone():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 8))
    head = MarginHead(5, 8, 30.0, 1.0, 0.5, 0.0, extra_prototypes=4)
    x, y = torch.randn(6, 3, 2, 2), torch.randint(0, 5, (6,))
    emb = backbone(x)
    sigma = (F.normalize(emb, dim=1) - F.normalize(head.weight, dim=1)[y]).square().mean(0).sqrt()  # has a graph
    j = torch.tensor([5, 6, 8, 5, 7, 6])
    v = virtual_embeddings(head.weight, sigma, j)
    assert not v.requires_grad
    F.cross_entropy(head(v, j), j).backward()  # the virtual part of Eq. 3 alone
    assert all(p.grad is None for p in backbone.parameters())
    assert head.weight.grad[5:].abs().sum() > 0


def test_sigma_follows_eq_6_and_7():
    cfg = parse(VIGFaceConfig, {**PRESETS["tiny"], "virtual_ids": 3, "fr_embedding_size": 4}, where="t")
    emb = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    head = MarginHead(2, 4, 30.0, 1.0, 0.3, 0.0, extra_prototypes=3)
    with torch.no_grad():
        head.weight[:2] = torch.tensor([[1.0, 1.0, 0, 0], [0, 1.0, 0, 0]])
    ctx = _fake_ctx(emb, head)
    step = fr_step(cfg, n_real=2)
    step(ctx, (torch.zeros(2, 2, 2, 3, dtype=torch.uint8), torch.tensor([0, 1])))
    r = 1 / math.sqrt(2)
    dev = torch.tensor([[1 - r, -r, 0, 0], [0, 0, 0, 0]])  # unit embedding - unit prototype
    want = 0.9 * dev.square().mean(0).sqrt() + 0.1 * torch.full((4,), 0.5)
    assert torch.allclose(ctx.state.tensors["sigma"], want, atol=1e-6)


def _fake_ctx(emb, head, sigma0=0.5):
    from fsbench.train.loop import StepContext, TrainEnv, TrainState

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return emb + self.p

    backbone = Fixed()
    state = TrainState(modules={"backbone": backbone, "head": head},
                       optimizers={"sgd": torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.0)},
                       tensors={"sigma": torch.full((emb.shape[1],), sigma0)})
    env = TrainEnv.setup("cpu", amp=False)
    from fsbench.train.device import grad_scaler

    state.scalers["sgd"] = grad_scaler(env.device, False)
    return StepContext(env, state, dict(state.modules), steps_per_epoch=10)


def test_without_virtual_embeddings_virtual_prototypes_collapse_with_them_they_spread():
    """Fig. 3: trained through the real step function on fixed class centres, the virtual
    prototypes drift together (V-V cosine mean well above R-R's) unless virtual embeddings
    train them, when V-V matches R-R."""
    from fsbench.train.device import grad_scaler
    from fsbench.train.loop import StepContext, TrainEnv, TrainState

    def run(virtual: bool) -> dict[str, float]:
        torch.manual_seed(0)
        n, k, d = 40, 40, 16
        centres = F.normalize(torch.randn(n, d), dim=1)
        head = MarginHead(n, d, 30.0, 1.0, 0.3, 0.0, extra_prototypes=k)
        emb_holder = {}

        class Features(nn.Module):  # the "backbone": noisy class centres of the batch's labels
            def __init__(self):
                super().__init__()
                self.p = nn.Parameter(torch.zeros(()))

            def forward(self, x):
                return emb_holder["e"] + self.p

        bb = Features()
        state = TrainState(modules={"backbone": bb, "head": head}, optimizers={"sgd": torch.optim.SGD(
            [*bb.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)},
            tensors={"sigma": torch.zeros(d)})
        env = TrainEnv.setup("cpu", amp=False)
        state.scalers["sgd"] = grad_scaler(env.device, False)
        ctx = StepContext(env, state, dict(state.modules), steps_per_epoch=10_000)
        cfg = parse(VIGFaceConfig, {**PRESETS["tiny"], "virtual_ids": k, "fr_embedding_size": d, "fr_lr": 0.1,
                                    "fr_warmup_steps": 0, "virtual_embeddings": virtual}, where="t")
        step = fr_step(cfg, n)
        for s in range(500):
            y = torch.randint(0, n, (64,))
            emb_holder["e"] = centres[y] + 0.15 * torch.randn(64, d)
            ctx.step = s
            step(ctx, (torch.zeros(64, 2, 2, 3, dtype=torch.uint8), y))
        return prototype_stats(head.weight, n)

    without, with_ = run(False), run(True)
    assert without["vv_mean"] > without["rr_mean"] + 0.1  # collapsing towards one point
    assert abs(with_["vv_mean"] - with_["rr_mean"]) < 0.05  # spread like the real ones
    assert with_["vv_std"] == pytest.approx(with_["rr_std"], rel=0.25)


# --------------------------------------------------------------------------- end to end (micro run)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vig") / "world"
    run_cli("data", "make", "procedural", "--out", root, "--ids", "16", "--per-id", "5", "--workers", "1",
            "--size", "64", "--no-masks")
    return root


@pytest.fixture(scope="module")
def micro_run(world, tmp_path_factory):
    return micro_train("vigface", world, tmp_path_factory.mktemp("vigrun") / "run", MICRO)


def test_micro_run_trains_both_stages_and_logs_fig_3b(micro_run):
    info = json.loads((micro_run / "run.json").read_text())
    assert info["generator"] == "vigface" and info["embedded_world"] is True
    fr = [json.loads(x) for x in (micro_run / "fr" / "metrics.jsonl").read_text().splitlines()]
    assert len(fr) == 2 * (80 // 16) and "vv_mean" in fr[1] and fr[0]["sigma"] > 0
    diff = [json.loads(x) for x in (micro_run / "diffusion" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in diff] == [1, 2, 3, 4] and all(r["loss_id"] >= 0 for r in diff)


def test_sampling_virtual_and_real_identities(cli, micro_run, tmp_path):
    out = cli.json("sample", "vigface", "--run", micro_run, "--out", tmp_path / "v", "--ids", "3", "--per-id", "2",
                   "-o", "steps=3")
    assert out["identities"] == 3 and out["image_size"] == [32, 32]
    import pandas as pd

    m = pd.read_csv(tmp_path / "v" / "manifest.csv")
    assert list(m["is_virtual"]) == [True] * 6 and list(m["prototype_row"][::2]) == [16, 17, 18]
    assert set(m["guidance"]) == {2.5} and set(m["steps"]) == {3} and set(m["seed"]) == {0}
    real = cli.json("sample", "vigface", "--run", micro_run, "--out", tmp_path / "r", "--ids", "2", "--per-id", "2",
                    "-o", "ids=real", "-o", "steps=3")
    m = pd.read_csv(tmp_path / "r" / "manifest.csv")
    assert real["identities"] == 2 and set(m["guidance"]) == {0.5} and not m["is_virtual"].any()
    assert list(m["source_identity"][::2]) == ["id_00000000", "id_00000001"]
    both = cli.json("sample", "vigface", "--run", micro_run, "--out", tmp_path / "r2", "--ids", "1", "--per-id", "1",
                    "-o", "ids=real", "-o", "steps=3", "-o", "guidance_real=1.5", "-o", "guidance_virtual=9")
    assert both["identities"] == 1 and sampler_info(tmp_path / "r2")["guidance"] == 1.5
    over = cli.json("sample", "vigface", "--run", micro_run, "--out", tmp_path / "r3", "--ids", "1", "--per-id", "1",
                    "-o", "ids=real", "-o", "steps=3", "-o", "guidance_real=1.5", "-o", "guidance=2")
    assert over["identities"] == 1 and sampler_info(tmp_path / "r3")["guidance"] == 2.0
    info = json.loads((tmp_path / "r" / "dataset.json").read_text())
    assert info["sampler"]["weights"] == "ema" and set(info["request"]["checkpoints"]) == {"fr", "diffusion"}


def test_contract_kit_passes_vigface(world, tmp_path):
    from fsbench.testing import check_generator

    report = check_generator(VIGFace, world, tmp_path, overrides=MICRO, options={"steps": 2, "batch_size": 2},
                             n_ids=2, per_id=2)
    assert report["stages"] == ["fr", "diffusion"] and report["sharded_equals_unsharded"]


def test_bad_input_is_refused_before_any_work(cli, world, micro_run, tmp_path):
    def refused(*args, match):
        r = cli(*args)
        assert r.exit_code == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and match in r.stderr, r.stderr

    refused("sample", "vigface", "--run", micro_run, "--out", tmp_path / "s", "--ids", "13", "-o", "steps=3",
            match="this run has 12 virtual prototypes")
    refused("sample", "vigface", "--run", micro_run, "--out", tmp_path / "s", match="-o steps=100: at most")
    refused("sample", "vigface", "--run", micro_run, "--out", tmp_path / "s", "-o", "guidance=-1", match="guidance")
    refused("train", "vigface", "--data", world, "--run", tmp_path / "new", "--stage", "diffusion",
            match="stage 'fr' has not finished")
    refused("train", "vigface", "--data", world, "--run", tmp_path / "p", "-o", "image_size=30",
            match="image_size=30 is not divisible by patch=4")
    assert not (tmp_path / "s").exists()
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(micro_run, broken)
    ckpt = broken / "diffusion" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    refused("sample", "vigface", "--run", broken, "--out", tmp_path / "s", "-o", "steps=3", match="checkpoint.pt")


def test_the_embedded_run_recommends_its_sampling_defaults(cli, tmp_path):
    """The shipped tiny run samples real identities at w 1.5 (README: 82.7 % stay nearest their
    own identity, 25.3 % at the paper's 0.5) and virtual ones at the paper's 2.5."""
    real = cli.json("sample", "vigface", "--out", tmp_path / "r", "--ids", "1", "--per-id", "1", "-o", "ids=real",
                    "-o", "steps=2")
    virtual = cli.json("sample", "vigface", "--out", tmp_path / "v", "--ids", "1", "--per-id", "1", "-o", "steps=2")
    assert real["images"] == virtual["images"] == 1
    assert sampler_info(tmp_path / "r")["guidance"] == 1.5 and sampler_info(tmp_path / "v")["guidance"] == 2.5
    paper = cli.json("sample", "vigface", "--out", tmp_path / "p", "--ids", "1", "--per-id", "1", "-o", "ids=real",
                     "-o", "steps=2", "-o", "guidance_real=0.5")
    assert paper["images"] == 1 and sampler_info(tmp_path / "p")["guidance"] == 0.5


def sampler_info(dataset: Path) -> dict:
    return json.loads((dataset / "dataset.json").read_text())["sampler"]

"""SegTex sampling speed on this machine, in one run: seconds an image of each of the seven
pipeline steps and the whole pipeline's images/s on the embedded default (tiny networks, 32 px),
batch 32 against one image at a time over the same keys; FLOPs and parameters an image of the
two networks at the tiny and the `paper` size (256 px), and the share of the bound set by the
machine's own matmul rate measured in the same run. Writes reports/benchmarks/segtex.md.

The steps are timed in a copy of SegTexSampler.sample's loop (one `pipeline.run` a step, each
step's generators seeded inside the clock, as the sampler does), so the sampler stays as it is;
the copy must give the sampler's bytes, and the whole pipeline is timed through
SegTexSampler.sample itself. An image's random draws never depend on its batch; its floats may
(batched convolutions sum in another order), which is why sampling cuts keys into fixed chunks
(sharded = unsharded bytes). The batched and the one-at-a-time images and maps are compared
byte for byte, the page says where and by how much they differ, and the test asserts at most
1 of 255 on at most 0.1 % of the values.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fsbench.api import SampleKey
from fsbench.generators.segtex import EMBEDDED, SegTex
from fsbench.generators.segtex.segmap_net import SegmapGenerator
from fsbench.generators.segtex.sizes import SIZES
from fsbench.generators.segtex.stages import onehot
from fsbench.generators.segtex.steps import SLOTS
from fsbench.generators.segtex.texture_net import TextureNet
from fsbench.sampling import keys_for, plan_sampling
from fsbench.train.data import normalize

OUT = Path(__file__).resolve().parents[2] / "reports" / "benchmarks" / "segtex.md"
N_IDS, PER_ID = 8, 8  # 64 images; per_id < maps_per_identity (10), so every image has its own map
BATCH = 32
REPEATS = 5  # after one warm-up pass; batched and one-at-a-time passes alternate, so both see the same load
SEED = 0

Times = dict[str, float]  # slot (or "setup") -> seconds summed over the keys
Snaps = dict[str, tuple[np.ndarray, np.ndarray]]  # slot -> (images, maps) after that step, every key


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one fp32 n x n matmul here: the bound a convolutional network's time is set against.

    The fastest of the repeats, not their median: on shared cores a busy moment only slows a
    product down, and a median taken in one gave shares of the bound above 100 %."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def cpu_name() -> str:
    """platform.processor() is empty on Linux; /proc/cpuinfo names the CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _chunks(keys: Sequence[SampleKey], batch: int) -> list[list[SampleKey]]:
    return [list(keys[k:k + batch]) for k in range(0, len(keys), batch)]


def timed_pass(sampler: Any, keys: Sequence[SampleKey], batch: int) -> tuple[Times, Snaps]:
    """SegTexSampler.sample's loop over `keys` in chunks of `batch`, a clock around the setup (the
    identities' pool crops, resized) and around each step (its generators' seeding included, as
    the sampler seeds them per step); what each step left, for finding where two passes part."""
    times: Times = {}
    snaps: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    s = sampler.config.image_size
    for chunk in _chunks(keys, batch):
        t = time.perf_counter()
        src = [sampler.source(k.seed, k.row) for k in chunk]
        state = {"images": np.zeros((len(chunk), s, s, 3), np.uint8), "maps": None, "keys": list(chunk),
                 "params": [{} for _ in chunk], "regions": sampler.context.crops(src), "segtex": sampler.context}
        times["setup"] = times.get("setup", 0.0) + time.perf_counter() - t
        with torch.no_grad():
            for step in sampler.steps:
                t = time.perf_counter()
                state = sampler.pipeline.run(state, sampler._rngs(chunk, step.slot), steps=[step])
                times[step.slot] = times.get(step.slot, 0.0) + time.perf_counter() - t
                snaps.setdefault(step.slot, []).append((state["images"].copy(), state["maps"].copy()))
    return times, {slot: (np.concatenate([a for a, _ in v]), np.concatenate([m for _, m in v])) for slot, v in snaps.items()}


def whole_pass(sampler: Any, keys: Sequence[SampleKey], batch: int) -> tuple[float, np.ndarray, np.ndarray]:
    """SegTexSampler.sample itself over `keys` in chunks of `batch`: seconds, images, maps."""
    t = time.perf_counter()
    samples = [x for chunk in _chunks(keys, batch) for x in sampler.sample(chunk)]
    seconds = time.perf_counter() - t
    return seconds, np.stack([x.image for x in samples]), np.stack([x.aux["masks"][1] for x in samples])


def texture_float_gap(sampler: Any, snaps: Snaps, keys: Sequence[SampleKey]) -> float:
    """Largest |difference| of the texture network's float output for the first chunk's keys run
    as one batch and one at a time, on the same inputs: how far the kernels' sums part by batch size."""
    n = min(BATCH, len(keys))
    net = sampler.context.texture
    maps = snaps["texture_randomisation"][1][:n]
    state = {"images": np.zeros((n, 1, 1, 3), np.uint8), "maps": None, "keys": list(keys[:n]), "params": [{} for _ in range(n)],
             "regions": sampler.context.crops([sampler.source(k.seed, k.row) for k in keys[:n]]), "segtex": sampler.context}
    with torch.no_grad():  # the regions as texture_application sees them: texture_randomisation's gains applied
        for step in sampler.steps[:2]:
            state = sampler.pipeline.run(state, sampler._rngs(keys[:n], step.slot), steps=[step])
        seg = onehot(torch.from_numpy(maps))
        parts = [normalize(torch.from_numpy(np.ascontiguousarray(state["regions"][:, k]))) for k in range(5)]
        together = net(seg, *parts)
        alone = torch.cat([net(seg[i:i + 1], *(p[i:i + 1] for p in parts)) for i in range(n)])
    return float((together - alone).abs().max())


@torch.no_grad()
def one_forward(net: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[float, float, torch.Tensor]:
    """FLOPs (FlopCounterMode: 2 x multiply-adds of convolutions and matmuls) and wall seconds of
    one forward, and its output: one is enough at the paper size, where a forward takes seconds."""
    with FlopCounterMode(display=False) as counter:
        t = time.perf_counter()
        out = net(*inputs)
        seconds = time.perf_counter() - t
    return float(counter.get_total_flops()), seconds, out


def params_m(net: nn.Module) -> float:
    return sum(p.numel() for p in net.parameters()) / 1e6


def paper_rows() -> list[tuple[str, float, float, float, float]]:
    """Randomly initialised paper-size networks, one 256 px image each (the segmap generator's map
    feeds the texture network, as in the pipeline): (name, M params, GFLOP, library's meta-device
    GFLOP, seconds)."""
    torch.manual_seed(SEED)
    size = SIZES["paper"]
    s = size.segmap.image_size
    crops = [torch.rand(1, 3, s, s) * 2 - 1 for _ in range(5)]  # skin, hair, l_eye, r_eye, mouth in [-1, 1]
    rows = []
    segmap = SegmapGenerator(size.segmap).eval()
    flops, sec, logits = one_forward(segmap, (crops[0], crops[1], crops[4]))
    rows.append(("segmap generator", params_m(segmap), flops / 1e9, segmap.flops() / 1e9, sec))
    del segmap
    texture = TextureNet(size.texture).eval()
    flops, sec, _ = one_forward(texture, (onehot(logits.argmax(1)), *crops))
    rows.append(("texture network", params_m(texture), flops / 1e9, texture.flops() / 1e9, sec))
    return rows


def _ms(seconds: float, n: int) -> str:
    return f"{1e3 * seconds / n:.3f}"


@torch.no_grad()
def test_pipeline_speed_batched_vs_one_at_a_time_and_flops():
    wall = time.perf_counter()
    peak = matmul_rate()
    plan = plan_sampling(SegTex(), EMBEDDED, n_ids=N_IDS, per_id=PER_ID, seed=SEED, overrides={"device": "cpu"})
    sampler = plan.sampler
    keys = keys_for(sampler.identities(N_IDS, SEED), PER_ID, SEED)
    n = len(keys)
    modes = {"batched": BATCH, "one": 1}

    # ---- the pipeline, step by step (the copy of the loop), then whole (SegTexSampler.sample)
    steps: dict[str, list[Times]] = {m: [] for m in modes}
    whole: dict[str, list[float]] = {m: [] for m in modes}
    snaps: dict[str, Snaps] = {}
    outs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for r in range(REPEATS + 1):
        for mode, batch in modes.items():
            times, snap = timed_pass(sampler, keys, batch)
            seconds, images, maps = whole_pass(sampler, keys, batch)
            if r == 0:  # the warm-up: kept for the byte comparisons, not timed
                snaps[mode], outs[mode] = snap, (images, maps)
            else:
                steps[mode].append(times)
                whole[mode].append(seconds)
    med = {m: {k: statistics.median(t[k] for t in steps[m]) for k in steps[m][0]} for m in modes}
    total = {m: statistics.median(whole[m]) for m in modes}

    # ---- bytes: the copy is the sampler; an image does not depend on its batch
    copy_faithful = all(np.array_equal(snaps[m]["augment"][0], outs[m][0]) and np.array_equal(snaps[m]["augment"][1], outs[m][1])
                        for m in modes)
    (img_b, map_b), (img_1, map_1) = outs["batched"], outs["one"]
    same = np.array_equal(img_b, img_1) and np.array_equal(map_b, map_1)
    first_diff = next((slot for slot in snaps["batched"] if not all(
        np.array_equal(a, b) for a, b in zip(snaps["batched"][slot], snaps["one"][slot]))), None)
    diff = img_b != img_1
    gap = texture_float_gap(sampler, snaps["batched"], keys)

    # ---- FLOPs an image: the shipped (trained, tiny) networks on one image, then the paper size
    c = sampler.context
    crop = torch.from_numpy(c.crops([sampler.source(SEED, 0)]))  # (1, 5, S, S, 3)
    parts = [normalize(crop[:, k]) for k in range(5)]
    tiny_seg_flops, _, logits = one_forward(c.segmap, (parts[0], parts[1], parts[4]))
    tiny_tex_flops, _, _ = one_forward(c.texture, (onehot(logits.argmax(1)), *parts))
    tiny = [("segmap generator", params_m(c.segmap), tiny_seg_flops / 1e9, c.segmap.flops() / 1e9, med["batched"]["maps"] / n),
            ("texture network", params_m(c.texture), tiny_tex_flops / 1e9, c.texture.flops() / 1e9,
             med["batched"]["texture_application"] / n)]
    peak = max(peak, matmul_rate())  # once more at the end: the faster of the two is the machine's rate
    tiny = [(*r, r[2] * 1e9 / r[4] / peak) for r in tiny]  # + the share of the matmul bound
    paper = [(*r, r[2] * 1e9 / r[4] / peak) for r in paper_rows()]

    # ---- the page
    threads = torch.get_num_threads()
    labels = {"setup": f"setup: the identities' pool crops, resized to {sampler.config.image_size} px"}
    step_rows = []
    for k, slot in enumerate(("setup", *SLOTS)):
        name = labels.get(slot, f"{k}. {slot}")
        if slot not in med["batched"]:
            step_rows.append(f"| {name} | not installed | not installed | - |")
            continue
        b, o = med["batched"][slot], med["one"][slot]
        step_rows.append(f"| {name} | {_ms(b, n)} | {_ms(o, n)} | {o / b:.1f} x |")
    sum_b, sum_o = (sum(med[m].values()) for m in modes)
    ips_b, ips_o = n / total["batched"], n / total["one"]
    paper_s = sum(r[4] for r in paper)
    if same:
        bytes_line = f"Batched and one-at-a-time images and maps: identical bytes ({n} images)."
    else:
        bytes_line = (
            f"Batched and one-at-a-time images: **not identical**: {int(diff.sum())} of {diff.size:,} uint8 values differ "
            f"(by at most {int(np.abs(img_b.astype(int) - img_1).max())} of 255, in {int(diff.any(axis=(1, 2, 3)).sum())} of "
            f"{n} images); maps {'identical' if np.array_equal(map_b, map_1) else 'differ'}; first after step "
            f"`{first_diff}`. The texture network's float output for the same inputs at batch {BATCH} and batch 1 differs "
            f"by up to {gap:.1e} (other convolution kernels, other sums), and rounding to uint8 flips values that sit "
            "on a rounding boundary.")
    lines = [
        "# SegTex sampling speed (generated by tests/benchmarks/bench_segtex.py)",
        "",
        f"CPU: {cpu_name()} ({torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}, "
        f"{threads} torch thread{'s' if threads > 1 else ''} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
        f"{': one thread measured' if threads == 1 else ''}); "
        f"measured matmul rate (2048^2 fp32, the fastest of 5 at the start and 5 at the end) {peak / 1e9:.1f} GFLOP/s.",
        "",
        f"## The pipeline on the embedded default (tiny networks, 32 px, {sampler.info['textures_items']}-face texture pool)",
        "",
        f"{n} images ({N_IDS} identities x {PER_ID}, seed {SEED}), the same keys at batch {BATCH} and one at a time; "
        f"medians of {REPEATS} passes after a warm-up, batched and one-at-a-time passes alternating. Steps timed in a "
        "copy of SegTexSampler.sample's loop (each step's generators seeded inside its clock), the whole pipeline through "
        f"SegTexSampler.sample itself (the copy gives its bytes: {'yes' if copy_faithful else '**no**'}).",
        "",
        f"| step | ms an image, batch {BATCH} | ms an image, one at a time | batching speed-up |",
        "|---|---|---|---|",
        *step_rows,
        f"| sum of the above | {_ms(sum_b, n)} | {_ms(sum_o, n)} | {sum_o / sum_b:.1f} x |",
        f"| whole pipeline (SegTexSampler.sample) | {_ms(total['batched'], n)} | {_ms(total['one'], n)} | "
        f"{total['one'] / total['batched']:.1f} x |",
        "",
        f"Whole pipeline: **{ips_b:.0f} images/s batched, {ips_o:.0f} images/s one at a time** "
        f"(batched / one at a time = {ips_b / ips_o:.2f}).",
        "",
        bytes_line,
        "",
        "## FLOPs and parameters an image",
        "",
        "FlopCounterMode over one forward of one image (2 x multiply-adds of convolutions and matmuls; norms and "
        "activations not counted), beside the networks' own `flops()` (the same count on the meta device). Tiny: the "
        "shipped trained networks, timed as their step's batched time an image (maps also draws and resizes crops). "
        f"Paper: randomly initialised (seed {SEED}), one forward of one 256 px image, timed once (no warm-up).",
        "",
        "| size | network | parameters (M) | GFLOP an image | `flops()` GFLOP | s an image | share of the matmul bound |",
        "|---|---|---|---|---|---|---|",
        *[f"| tiny (32 px, shipped) | {name} | {p:.3f} | {g:.3f} | {m:.3f} | {s:.2e} | {100 * share:.0f} % |"
          for name, p, g, m, s, share in tiny],
        *[f"| paper (256 px) | {name} | {p:.2f} | {g:.1f} | {m:.1f} | {s:.2f} | {100 * share:.0f} % |"
          for name, p, g, m, s, share in paper],
        "",
        f"At the paper size the two networks alone give {1 / paper_s:.2f} images/s on this CPU "
        f"({sum(r[2] for r in paper):.0f} GFLOP an image); the tiny pipeline does "
        f"{sum(r[2] for r in tiny) * ips_b:.1f} GFLOP/s of network work batched.",
        "",
        f"Wall time of this benchmark: {time.perf_counter() - wall:.0f} s.",
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))

    assert copy_faithful, "the timed copy of SegTexSampler.sample's loop gave other bytes than the sampler"
    for name, _, g, m, *_ in (*tiny, *paper):
        assert abs(g - m) <= 1e-6 * m, f"{name}: FlopCounterMode over a forward {g} GFLOP, flops() {m} GFLOP"
    assert same or (np.abs(img_b.astype(int) - img_1).max() <= 1 and diff.mean() <= 1e-3), bytes_line

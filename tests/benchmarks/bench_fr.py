"""FR training speed (issue 5): the training feed and the margin head against their baselines.

1. Feed: epochs 2..3 of shuffled, flipped 48 px batches from 2,000 112 px JPEGs. fsbench's
   `TrainBatches` decodes and resizes once (cache) and then indexes memory; the obvious
   baseline is a torch DataLoader over `ds[i]` that decodes, resizes and flips every epoch.
2. Head: ArcFace logits for a batch of 512 over 10,000 classes, `MarginHead` vs a per-sample
   loop over the target logits (how a first implementation often looks).
3. Step: one training step of the `tiny` preset (model + head + SGD), images per second.

Ratios are printed (the feed asserted > 1, the matmul-bound head ~1); absolute numbers depend on the machine.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fsbench.data import FaceDataset
from fsbench.nn.margin import MarginHead
from fsbench.train.data import TrainBatches, resize_uint8

N_IDS, PER_ID, SIZE, INPUT = 100, 20, 112, 48  # INPUT: the tiny preset's


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchfr") / "ds"
    rng = np.random.default_rng(0)
    for i in range(N_IDS):
        d = root / f"id_{i:04d}"
        d.mkdir(parents=True)
        base = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        for j in range(PER_ID):
            Image.fromarray(np.roll(base, j, axis=1)).save(d / f"{j:03d}.jpg", quality=90)
    return FaceDataset.open(root)


def _median(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class _Baseline(torch.utils.data.Dataset):
    """Decode + resize + random flip per item, every epoch."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        img, label = self.ds[i]
        img = resize_uint8(img[None], INPUT)[0]
        if np.random.random() < 0.5:
            img = img[:, ::-1].copy()
        return torch.from_numpy(img), label


def test_feed_cached_vs_dataloader(world):
    def decode() -> TrainBatches:
        """A fresh feed up to its first batch: the cache is decoded when the first epoch starts."""
        fresh = TrainBatches(world, 64, INPUT, seed=0, cache=True, show_progress=False)
        next(iter(fresh.epoch(0)))
        return fresh

    t0 = time.perf_counter()
    feed = decode()
    t_build = time.perf_counter() - t0

    def ours():
        for epoch in (1, 2):
            for _ in feed.epoch(epoch):
                pass

    loader = torch.utils.data.DataLoader(_Baseline(world), batch_size=64, shuffle=True, drop_last=True, num_workers=0)

    def baseline():
        for _ in range(2):
            for _ in loader:
                pass

    t_ours, t_base = _median(ours), _median(baseline, 1)
    print(f"\nfeed, 2 epochs of {len(world)} images: fsbench {t_ours:.3f}s (+{t_build:.2f}s one-off decode), "
          f"DataLoader {t_base:.3f}s, ratio {t_base / t_ours:.1f}x; with the decode counted: "
          f"{t_base / (t_ours + t_build):.1f}x")
    assert t_base / t_ours > 1.0


def test_margin_head_vs_loop():
    torch.manual_seed(0)
    head = MarginHead.named("arcface", 10_000, 512, s=64.0)
    emb, labels = torch.randn(512, 512), torch.randint(0, 10_000, (512,))

    def loop():
        cos = torch.nn.functional.normalize(emb) @ torch.nn.functional.normalize(head.weight.detach()).t()
        out = cos.clone()
        for i in range(len(labels)):
            c = float(cos[i, labels[i]].clamp(-1, 1))
            out[i, labels[i]] = math.cos(math.acos(c) + 0.5)
        return out * 64

    with torch.no_grad():
        ref = loop()
        got = head(emb, labels)
        assert torch.allclose(got, ref, atol=1e-3)
        t_ours, t_loop = _median(lambda: head(emb, labels)), _median(loop)
    print(f"\narcface head, 512 x 10,000: MarginHead {t_ours * 1e3:.1f} ms, loop {t_loop * 1e3:.1f} ms, "
          f"ratio {t_loop / t_ours:.1f}x")
    assert t_loop / t_ours > 0.5  # the head is matmul-bound: expect ~1x, never much slower


def test_tiny_training_step_throughput():
    from fsbench.train.fr import build_model, fr_config

    cfg = fr_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg, 1000)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(cfg["batch_size"], 3, cfg["input_size"], cfg["input_size"])
    y = torch.randint(0, 1000, (cfg["batch_size"],))

    def step():
        logits, _ = model(x, y)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t = _median(lambda: [step() for _ in range(5)]) / 5
    threads = torch.get_num_threads()
    print(f"\ntiny preset step ({cfg['network']} w{cfg['width']} @ {cfg['input_size']}px, batch {cfg['batch_size']}, "
          f"{threads} threads): {cfg['batch_size'] / t:.0f} images/s")

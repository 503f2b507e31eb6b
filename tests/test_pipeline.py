"""Pipeline-step hook: slots filled by registered steps, replaced or extended by other plugins,
unavailable steps recorded as not installed, each item drawing from its own generator."""

from __future__ import annotations

import types

import numpy as np
import pytest

import fsbench
from fsbench.api import PipelineStep
from fsbench.errors import PluginError
from fsbench.pipeline import resolve
from fsbench.registry import Registry


class Brighten(PipelineStep):
    name = "toy.brighten"
    pipeline, slot = "toy", "brighten"

    def apply(self, batch, rngs):
        for i, rng in enumerate(rngs):
            delta = int(rng.integers(1, 10))
            batch["images"][i] = np.clip(batch["images"][i].astype(int) + delta, 0, 255)
            batch["params"][i]["brighten"] = {"delta": delta}
        return batch


class Refiner(PipelineStep):
    name = "toy.refiner"
    pipeline, slot = "toy", "refine"
    available = False  # no offline weights: a plug-in point

    def apply(self, batch, rngs):  # pragma: no cover - never run
        raise AssertionError


class Darken(Brighten):
    name = "mine.darken"
    replaces = True

    def apply(self, batch, rngs):
        batch["images"] = batch["images"] // 2
        for p in batch["params"]:
            p["brighten"] = {"halved": True}
        return batch


class Flip(PipelineStep):
    name = "mine.flip"
    pipeline, slot, after = "toy", "flip", "brighten"

    def apply(self, batch, rngs):
        batch["images"] = batch["images"][:, :, ::-1]
        return batch


def registry(*classes):
    reg = Registry(entry_points=False)
    for k, cls_list in enumerate(classes):
        mod = types.SimpleNamespace(fsbench_register_pipeline_steps=fsbench.hookimpl(lambda c=cls_list: list(c)))
        reg.register(mod, name=f"plugin{k}")
    return reg


def batch(n=3):
    images = np.arange(n * 4 * 4 * 3, dtype=np.uint8).reshape(n, 4, 4, 3)
    return {"images": images, "maps": None, "keys": list(range(n)), "params": [{} for _ in range(n)]}


def test_builtin_steps_fill_their_slots_and_missing_ones_are_recorded():
    pipe = resolve("toy", ["brighten", "refine", "age"], registry([Brighten, Refiner]))
    assert pipe.record() == {
        "brighten": {"step": "toy.brighten", "status": "ran", "plugin": "plugin0"},
        "refine": {"step": "toy.refiner", "status": "not installed", "plugin": "plugin0"},
        "age": {"step": "-", "status": "not installed", "plugin": "-"},
    }
    b = batch()
    out = pipe.run(batch(), [np.random.default_rng([7, i]) for i in range(3)])
    deltas = [p["brighten"]["delta"] for p in out["params"]]
    assert (out["images"].astype(int) - b["images"] == np.array(deltas)[:, None, None, None]).all()
    # an item's draw depends on its own generator only, not on its batch
    alone = pipe.run(batch(1), [np.random.default_rng([7, 0])])
    assert alone["params"][0] == out["params"][0]


def test_a_plugin_replaces_one_step_and_adds_another():
    pipe = resolve("toy", ["brighten", "refine"], registry([Brighten, Refiner], [Darken, Flip]))
    assert [s.name for s in pipe.slots] == ["brighten", "flip", "refine"]
    assert pipe.record()["brighten"] == {"step": "mine.darken", "status": "ran", "plugin": "plugin1"}
    out = pipe.run(batch(), [np.random.default_rng(i) for i in range(3)])
    assert (out["images"] == (batch()["images"] // 2)[:, :, ::-1]).all()


def test_conflicts_name_both_plugins():
    class Darken2(Darken):
        name = "other.darken"

    with pytest.raises(PluginError, match="'plugin1' and 'plugin2' both replace toy's 'brighten'"):
        resolve("toy", ["brighten"], registry([Brighten], [Darken], [Darken2]))

    class Lost(Flip):
        name = "mine.lost"
        slot, after = "lost", "nowhere"

    with pytest.raises(PluginError, match="after 'nowhere', which pipeline 'toy' does not have"):
        resolve("toy", ["brighten"], registry([Lost]))

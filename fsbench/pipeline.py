"""A generator's dataset pipeline: named slots, each filled by a registered PipelineStep.

A generator declares its slots in order (SegTex: texture, pose, refiner, age, augment); any
plugin may replace the step in a slot or add a step after one (`fsbench.api.PipelineStep`).
`resolve` picks the steps, `Pipeline.run` applies them to a batch, and `Pipeline.record`
says for dataset.json which step filled each slot, from which plugin, and which slots had
nothing installed (SegTex's refiner and age have no offline weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsbench.api import PipelineStep
from fsbench.errors import PluginError

__all__ = ["Pipeline", "resolve"]


@dataclass(frozen=True)
class Slot:
    name: str
    step: type[PipelineStep] | None  # None: a plug-in point nothing fills
    plugin: str


@dataclass
class Pipeline:
    name: str
    slots: list[Slot]
    options: dict[str, Any]

    def steps(self) -> list[PipelineStep]:
        return [s.step(self.options.get(s.name)) for s in self.slots if s.step is not None and s.step.available]

    def run(self, batch: dict[str, Any], rngs: Sequence[np.random.Generator],
            steps: list[PipelineStep] | None = None) -> dict[str, Any]:
        """Apply every available step in order; each writes its draws into batch["params"]."""
        for step in steps if steps is not None else self.steps():
            batch = step.apply(batch, rngs)
        return batch

    def record(self) -> dict[str, dict[str, str]]:
        out = {}
        for s in self.slots:
            if s.step is None or not s.step.available:
                out[s.name] = {"step": s.step.name if s.step else "-", "status": "not installed", "plugin": s.plugin}
            else:
                out[s.name] = {"step": s.step.name, "status": "ran", "plugin": s.plugin}
        return out


def resolve(pipeline: str, slots: Sequence[str], registry: Any = None,
            options: dict[str, Any] | None = None) -> Pipeline:
    """Fill `slots` (in order) with the registered steps of `pipeline`; added slots go after
    the slot they name. Two replacements of one slot, or an `after` that names no slot, is a
    PluginError naming the plugins."""
    from fsbench.registry import get_registry

    registry = registry or get_registry()
    entries = [e for e in registry.entries("pipeline_step") if e.cls.pipeline == pipeline]
    order = list(slots)
    for e in entries:  # added slots, placed after the slot they name
        if e.cls.slot not in order:
            if e.cls.after not in order:
                raise PluginError(f"plugin {e.plugin!r}: step {e.name!r} adds slot {e.cls.slot!r} after "
                                  f"{e.cls.after!r}, which pipeline {pipeline!r} does not have (slots: {', '.join(order)})")
            order.insert(order.index(e.cls.after) + 1, e.cls.slot)
    filled = []
    for slot in order:
        here = [e for e in entries if e.cls.slot == slot]
        replacing = [e for e in here if e.cls.replaces]
        if len(replacing) > 1:
            raise PluginError(f"plugins {replacing[0].plugin!r} and {replacing[1].plugin!r} both replace "
                              f"{pipeline}'s {slot!r} step")
        builtin = [e for e in here if not e.cls.replaces]
        if len(builtin) > 1:
            raise PluginError(f"plugins {builtin[0].plugin!r} and {builtin[1].plugin!r} both fill {pipeline}'s "
                              f"{slot!r} step (one of them should set replaces = True)")
        chosen = (replacing or builtin or [None])[0]
        filled.append(Slot(slot, chosen.cls if chosen else None, chosen.plugin if chosen else "-"))
    return Pipeline(pipeline, filled, dict(options or {}))

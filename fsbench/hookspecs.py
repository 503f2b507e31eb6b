"""The plugin contract: the hooks a plugin module may implement.

A plugin is a module with functions decorated by ``fsbench.hookimpl`` whose names match the
specifications below, listed in the ``fsbench`` entry-point group of its distribution::

    # pyproject.toml of "fsbench-hello"
    [project.entry-points.fsbench]
    hello = "fsbench_hello"

    # fsbench_hello.py
    import fsbench
    from fsbench.api import Metric, MetricResult

    class ImagesPerIdentity(Metric):
        name = "hello"
        needs = frozenset()
        def compute(self, ctx):
            counts = ctx.dataset.counts()
            return MetricResult(self.name, {"mean": counts.mean()})

    @fsbench.hookimpl
    def fsbench_register_metrics():
        return [ImagesPerIdentity]

fsbench's own generators, metrics and embedders are registered this way too. Hooks evolve by
gaining arguments, never by multiplying; a hook implementation may omit arguments it does
not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from fsbench.api import DatasetFormat, Embedder, Generator, Metric, PipelineStep
    from fsbench.commands import Commands

hookspec = pluggy.HookspecMarker("fsbench")


@hookspec
def fsbench_register_generators() -> list[type[Generator]]:
    """Return Generator subclasses, e.g. ``[VIGFace]``; `Generator.name` is the lookup key."""


@hookspec
def fsbench_register_metrics() -> list[type[Metric]]:
    """Return Metric subclasses; `Metric.name` is what ``--metrics a,b`` selects."""


@hookspec
def fsbench_register_embedders() -> list[type[Embedder]]:
    """Return Embedder subclasses; `Embedder.name` is the part of ``--embedder NAME:OPT``
    before the colon. Feature extractors for distribution metrics (Inception) are embedders
    with ``normalized = False``."""


@hookspec
def fsbench_register_formats() -> list[type[DatasetFormat]]:
    """Return DatasetFormat subclasses (readers for .rec, CelebAMask-HQ, ...)."""


@hookspec
def fsbench_register_commands(commands: Commands) -> None:
    """Add click commands to the ``fsbench`` command line through the `fsbench.commands.Commands`
    facade (never fsbench's click tree itself).

    ``commands.add(my_command)`` adds a top-level command; ``commands.add(cmd, under="data make")``
    a maker of datasets; ``commands.group("benchmark", help)`` makes a group others may share.
    Commands should raise `fsbench.errors.FsbenchError` subclasses for expected mistakes: the
    CLI turns them into one line on stderr and exit code 2.
    """


@hookspec
def fsbench_register_pipeline_steps() -> list[type[PipelineStep]]:
    """Return PipelineStep subclasses: steps of a generator's dataset pipeline (SegTex's pose,
    refiner, age), each for a ``(pipeline, slot)``; ``replaces = True`` takes over a built-in
    step's slot, ``after = "slot"`` adds a new one (see `fsbench.api.PipelineStep`)."""

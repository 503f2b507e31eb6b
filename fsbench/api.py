"""The contracts between fsbench's core and its plugins.

Everything a plugin hands to fsbench is a subclass of one of the base classes here:
`Generator`, `Embedder`, `Metric`, `DatasetFormat` or `PipelineStep`. The core never imports a plugin by
name; it asks the registry for a class by its `name` and talks to it only through these
methods. Keep plugin modules cheap to import (import torch inside methods): the CLI imports
every plugin to build `--help`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from fsbench.options import opt

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    import pandas as pd

    from fsbench.data.dataset import FaceDataset
    from fsbench.evaluation import EvalContext  # lives there (it needs the data layer); import it from there

__all__ = [
    "DatasetFormat",
    "Embedder",
    "Embeddings",
    "Generator",
    "Identity",
    "Metric",
    "MetricResult",
    "PipelineStep",
    "Plugin",
    "Sample",
    "SampleKey",
    "Sampler",
    "Stage",
    "StagePlan",
    "TrainConfig",
]


class Plugin(abc.ABC):
    """What every registered class has: a unique, file-name-safe `name` and a one-line summary."""

    name: ClassVar[str]
    description: ClassVar[str] = ""


# --------------------------------------------------------------------------- embedders


@dataclass(frozen=True)
class Embeddings:
    """L2-normalised vectors for the images of one dataset, aligned with its items.

    `index` maps each row back to `FaceDataset.items`: rows for images that could not be
    embedded (a corrupt file skipped with --skip-bad, no face found) are absent, and the
    reasons are in `failed`.
    """

    vectors: np.ndarray  # (N, D) float32, unit rows
    labels: np.ndarray  # (N,) int64 identity label of each row
    index: np.ndarray  # (N,) int64 position in FaceDataset.items
    identities: tuple[str, ...]  # label -> identity name
    space: str  # the embedder's cache key: which network, weights and preprocessing
    failed: tuple[tuple[str, str], ...] = ()  # (relative path, reason)

    def __len__(self) -> int:
        return len(self.vectors)


class Embedder(Plugin):
    """Maps face images to vectors.

    A spec on the command line is ``NAME[:OPTION]`` (``dlib:aligned``,
    ``insightface:/models/w600k_r50.onnx``); the part after the colon reaches `__init__` as
    `option`. `embed` receives uint8 RGB images (N, H, W, 3) of one size and returns float32
    (N, dim); `normalized` says whether rows are unit length (face embedders) or raw
    features (Inception pool features for FID).
    """

    dim: ClassVar[int]
    input_size: ClassVar[tuple[int, int]] = (112, 112)  # (H, W) the network sees
    aligned_input: ClassVar[bool] = True  # True: wants pre-aligned crops; False: aligns itself
    normalized: ClassVar[bool] = True
    batch_size: ClassVar[int] = 64

    def __init__(self, option: str | None = None) -> None:
        self.option = option

    @abc.abstractmethod
    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, dim) float32."""

    def weights_id(self) -> str:
        """A short hash of the weights in use: part of every cache key. Override when loaded."""
        return "none"

    def cache_key(self) -> str:
        """Everything that changes the vectors: name, option, weights, preprocessing."""
        option = (self.option or "default").replace("/", "_").replace(":", "_")
        return f"{self.name}-{option}-{self.weights_id()}"

    def failures(self) -> dict[int, str]:
        """Rows of the last `embed` call that hold no real embedding (say, no face found).

        Keys are positions within that batch; the context drops those rows and reports them.
        """
        return {}


# --------------------------------------------------------------------------- metrics


@dataclass
class MetricResult:
    """What a metric returns: named scalars, an optional per-identity/per-item table, notes.

    `scalars` always holds plain floats (NaN when undefined, with a note saying why), so the
    results of many runs line up in one pandas frame.
    """

    metric: str
    scalars: dict[str, float]
    per_item: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)
    space: str | None = None  # feature space the numbers were computed in, if any

    def __post_init__(self) -> None:
        self.scalars = {k: float(v) for k, v in self.scalars.items()}

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes null), as `evaluate --json` prints it."""
        return {
            **{k: (None if math.isnan(v) else v) for k, v in self.scalars.items()},
            **({"space": self.space} if self.space else {}),
            **({"notes": list(self.notes)} if self.notes else {}),
        }


class Metric(Plugin):
    """Scores a dataset from what the `EvalContext` provides; never loads images itself.

    `needs` declares what `compute` will ask the context for, so `evaluate` can refuse a
    missing input (no `--reference` for `iou`) before any embedding is done:
    ``"embeddings"``, ``"reference"``, ``"benchmarks"``, ``"images"``.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"embeddings"})
    higher_is_better: ClassVar[bool | None] = None
    primary: ClassVar[str] = "mean"  # the scalar shown in one-number summaries
    Options: ClassVar[type | None] = None  # fsbench.options schema of its `-o METRIC.KEY=VALUE` keys
    # Scalars shown beside `primary` in evaluate's table and report's columns, each its own
    # cell, when one number would hide the others (prdc: recall, density, coverage).
    also_shown: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abc.abstractmethod
    def compute(self, ctx: EvalContext) -> MetricResult:
        """Compute the metric; raise `fsbench.errors.MetricError` when it is undefined."""


# --------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class Stage:
    """One training stage: `needs` names the earlier stages whose weights it starts from
    (VIGFace: ``fr`` then ``diffusion``; SegTex: ``segmap`` then ``texture``)."""

    name: str
    needs: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class TrainConfig:
    """Knobs every trainable generator's config has; a generator's `Config` subclasses it.

    The core reads these (device, precision, seed, checkpoint cadence); the rest of a
    generator's config is its own."""

    seed: int = opt(0, "training seed (each torchrun rank draws seed * world_size + rank)", min=0)
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "auto: CUDA when present, else CPU")
    amp: bool = opt(True, "mixed precision on CUDA (fp16 with loss scaling, or the stage's bf16)")
    max_steps: int = opt(0, "> 0: stop every stage at this step (smoke runs); the schedule is unchanged", min=0)
    checkpoint_every: int = opt(500, "steps between checkpoints (a kill loses at most this many)", min=1)


# Config keys that may change when a run is resumed without changing its result.
RESUMABLE = frozenset({"max_steps", "checkpoint_every", "device", "workers"})


@dataclass
class StagePlan:
    """What a generator hands the training loop for one stage (see fsbench.train.loop).

    `on_finish(state)` runs once when the stage completes (print statistics, export)."""

    state: Any  # fsbench.train.loop.TrainState
    step: Callable[..., Any]  # (StepContext, batch) -> {name: scalar}
    batches: Any  # steps_per_epoch + epoch(epoch, start)
    total_steps: int
    batch_size: int
    amp_dtype: str = "fp16"
    extra: dict[str, Any] = field(default_factory=dict)  # stored in the stage's checkpoints
    on_finish: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class Identity:
    """One identity a sampler will draw: its folder name, the row it conditions on (a
    prototype, a world index) and what every image's manifest row says of it."""

    name: str
    row: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SampleKey:
    """What one synthetic image is a pure function of."""

    identity: str
    row: int
    image: int
    seed: int


@dataclass
class Sample:
    """One sampled image: uint8 (H, W, 3) array or encoded bytes (of `Sampler.suffix`), its
    aux files ``{kind: (file name, bytes or array)}`` and its manifest fields."""

    image: np.ndarray | bytes
    meta: dict[str, Any] = field(default_factory=dict)
    aux: dict[str, tuple[str, Any]] = field(default_factory=dict)


class Sampler(abc.ABC):
    """A generator ready to sample: chooses identities, maps keys to images.

    `sample(keys)` must give each key the image it would get in any other batch: the core
    cuts the key list into fixed chunks of `batch_size` in one global order and hands them
    out to shards, so a sharded run and an unsharded one see the same batches and write
    the same bytes. Draw noise per key (from key.seed, key.row, key.image), never per batch.
    """

    suffix: ClassVar[str] = ".png"
    aux_dirs: ClassVar[tuple[str, ...]] = ()
    batch_size: int = 16
    info: dict[str, Any]  # recorded in dataset.json: options, weights sampled (last or EMA)...

    @abc.abstractmethod
    def identities(self, n_ids: int, seed: int) -> list[Identity]:
        """The `n_ids` identities to sample (refuse more than there are, as a UsageError)."""

    @abc.abstractmethod
    def sample(self, keys: Sequence[SampleKey]) -> list[Sample]:
        """One Sample per key, in order."""


class Generator(Plugin):
    """A trainable (or procedural) source of synthetic face datasets.

    Declares `Config` (a frozen dataclass of fsbench.options fields; trainable generators
    subclass `TrainConfig`), `presets` (overrides of Config's defaults; ``tiny`` for CPU
    minutes and ``paper`` for the published setting), `stages` in training order, and
    `SampleOptions` (the ``-o`` keys of ``fsbench sample``). The core owns run folders,
    the training loop, sharding and resume: a generator builds models and steps
    (`plan_stage`) and a `Sampler`. `fsbench.testing.check_generator` checks the contract.
    """

    Config: ClassVar[type] = TrainConfig
    SampleOptions: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}, "paper": {}}
    stages: ClassVar[tuple[Stage, ...]] = ()
    resumable: ClassVar[frozenset[str]] = RESUMABLE
    # True for a generator whose samples are the embedded world itself (procedural): the
    # default judge, trained on the world, then scores them (see fsbench.judge).
    embedded_world: ClassVar[bool] = False

    @property
    def needs_training(self) -> bool:
        return bool(self.stages)

    @classmethod
    def check_declaration(cls) -> None:
        """What the registry checks when a generator registers: schemas, presets, stages.

        Raises ValueError with the problem; the registry names the plugin beside it."""
        import dataclasses

        from fsbench.errors import UsageError
        from fsbench.options import check_presets, parse

        for label, schema in (("Config", cls.Config), ("SampleOptions", getattr(cls, "SampleOptions", None))):
            if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
                raise ValueError(f"{label} must be a dataclass of fsbench.options fields")
        if cls.stages and not issubclass(cls.Config, TrainConfig):
            raise ValueError("a generator with stages needs a Config that subclasses fsbench.api.TrainConfig")
        missing = {"tiny", "paper"} - set(cls.presets)
        if missing:
            raise ValueError(f"presets lack {', '.join(sorted(missing))} (every generator has tiny and paper)")
        seen: set[str] = set()
        for stage in cls.stages:
            unknown = [n for n in stage.needs if n not in seen]
            if unknown:
                raise ValueError(f"stage {stage.name!r} needs {unknown}, which is not an earlier stage")
            seen.add(stage.name)
        try:
            check_presets(cls.Config, cls.presets, where=f"generator {cls.name!r}")
            parse(cls.SampleOptions, {}, where=f"generator {cls.name!r} SampleOptions")
        except (UsageError, TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None

    def config(self, preset: str = "tiny", overrides: Mapping[str, Any] | None = None) -> Any:
        """The preset's typed config with overrides (strings from -o are converted)."""
        from fsbench.options import preset as resolve_preset

        return resolve_preset(self.Config, self.presets, preset, overrides or {}, where=f"generator {self.name!r}")

    def sample_options(self, overrides: Mapping[str, Any] | None = None) -> Any:
        from fsbench.options import parse

        return parse(self.SampleOptions, overrides or {}, where=f"fsbench sample {self.name}")

    def plan_stage(self, stage: str, ctx: Any) -> StagePlan:
        """Build the stage's training state, batches and step (ctx: fsbench.runs.StageContext)."""
        from fsbench.errors import UsageError

        raise UsageError(f"generator {self.name!r} needs no training")

    def default_run(self) -> Path | None:
        """The small run shipped with the plugin, sampled when no --run is given (or None)."""
        return None

    @abc.abstractmethod
    def sampler(self, run: Any, config: Any, options: Any) -> Sampler:
        """A Sampler for a finished run (fsbench.runs.Run; None without training)."""


# --------------------------------------------------------------------------- pipeline steps


class PipelineStep(Plugin):
    """One replaceable step of a generator's dataset pipeline (SegTex's pose, refiner, age).

    A generator names its pipeline and its slots in order (``fsbench.pipeline.resolve``);
    each slot is filled by the step registered for ``(pipeline, slot)``. A plugin replaces a
    built-in step by registering the same pair with ``replaces = True``, or adds a step in a
    new slot placed ``after`` an existing one. A step that cannot run here (no offline
    weights: SegTex's StyleGAN refiner) sets ``available = False``; the pipeline skips it and
    the dataset's metadata records it as "not installed".

    `apply` gets a batch ``{"images": uint8 (B, H, W, 3), "maps": uint8 (B, H, W) or None,
    "keys": [SampleKey], "params": [dict]}`` and returns it changed; it writes what it drew
    for each item into ``params[i][slot]`` (the manifest records it), drawing only from
    ``rngs[i]``, the item's own generator, so an item's draws never depend on its batch.
    """

    pipeline: ClassVar[str]
    slot: ClassVar[str]
    after: ClassVar[str | None] = None
    replaces: ClassVar[bool] = False
    available: ClassVar[bool] = True
    Options: ClassVar[type | None] = None  # fsbench.options schema of the step's -o keys

    def __init__(self, options: Any = None) -> None:
        self.options = options

    @abc.abstractmethod
    def apply(self, batch: dict[str, Any], rngs: Sequence[np.random.Generator]) -> dict[str, Any]:
        """Transform the batch (see the class docstring)."""


# --------------------------------------------------------------------------- formats


class DatasetFormat(Plugin):
    """A foreign on-disk dataset layout (insightface .rec, CelebAMask-HQ...) fsbench can read.

    `sniff` answers "is this path mine?" cheaply; `iter_items` yields
    ``(identity, file_name, encoded_image_bytes)`` so any format converts to an ImageFolder
    through `fsbench.data.DatasetWriter`; `write` is optional.
    """

    @classmethod
    @abc.abstractmethod
    def sniff(cls, path: Path) -> bool:
        """True when `path` looks like this format."""

    @abc.abstractmethod
    def iter_items(self, path: Path):  # -> Iterator[tuple[str, str, bytes]]
        """Yield (identity, file name, encoded image bytes) for every image."""

    def write(self, dataset: FaceDataset, path: Path) -> None:
        from fsbench.errors import UsageError

        raise UsageError(f"format {self.name!r} cannot be written")

    def outputs(self, path: Path) -> list[Path]:
        """Every file `write(dataset, path)` creates or replaces, the main one first: `convert`
        refuses to replace any that exists without --overwrite, and with --overwrite unless
        the main one exists (a set this format wrote, not somebody else's files)."""
        return [Path(path)]

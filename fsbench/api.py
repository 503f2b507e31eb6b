"""The contracts between fsbench's core and its plugins.

Everything a plugin hands to fsbench is a subclass of one of the four base classes here:
`Generator`, `Embedder`, `Metric` or `DatasetFormat`. The core never imports a plugin by
name; it asks the registry for a class by its `name` and talks to it only through these
methods. Keep plugin modules cheap to import (import torch inside methods): the CLI imports
every plugin to build `--help`.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    import pandas as pd

    from fsbench.data.dataset import FaceDataset
    from fsbench.evaluation import EvalContext

__all__ = [
    "DatasetFormat",
    "Embedder",
    "Embeddings",
    "EvalContext",
    "Generator",
    "Metric",
    "MetricResult",
    "Plugin",
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

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abc.abstractmethod
    def compute(self, ctx: EvalContext) -> MetricResult:
        """Compute the metric; raise `fsbench.errors.MetricError` when it is undefined."""


# --------------------------------------------------------------------------- generators


class Generator(Plugin):
    """A trainable (or procedural) source of synthetic face datasets.

    `presets` maps a preset name to its config dict; every generator has at least ``tiny``
    (CPU, minutes) and ``paper`` (the published setting). Training writes everything it needs
    into `run_dir` (config.json, checkpoints, metrics.jsonl) and resumes from it when run
    again; `sample` reads `run_dir` and writes a FaceDataset to `out_dir`.
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    needs_training: ClassVar[bool] = True

    def config(self, preset: str, **overrides: Any) -> dict[str, Any]:
        """The preset's config with overrides applied; unknown keys are refused by name."""
        from fsbench.errors import UsageError

        if preset not in self.presets:
            raise UsageError(
                f"generator {self.name!r} has no preset {preset!r} (known: {', '.join(self.presets)})"
            )
        cfg = dict(self.presets[preset])
        unknown = sorted(set(overrides) - set(cfg))
        if unknown:
            raise UsageError(
                f"generator {self.name!r}: unknown option(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(cfg))})"
            )
        for key, value in overrides.items():
            default = cfg[key]
            if default is not None and not isinstance(value, type(default)):
                try:
                    value = type(default)(value)
                except (TypeError, ValueError):
                    raise UsageError(
                        f"generator {self.name!r}: option {key}={value!r} is not a {type(default).__name__}"
                    ) from None
            cfg[key] = value
        return cfg

    def train(self, data: FaceDataset, run_dir: Path, preset: str = "tiny", **overrides: Any) -> Path:
        """Train (or resume) into `run_dir`; returns the final checkpoint path."""
        from fsbench.errors import UsageError

        raise UsageError(f"generator {self.name!r} needs no training")

    @abc.abstractmethod
    def sample(
        self,
        run_dir: Path | None,
        n_ids: int,
        per_id: int,
        out_dir: Path,
        seed: int = 0,
        **options: Any,
    ) -> FaceDataset:
        """Write `n_ids` identities x `per_id` images to `out_dir` (resumable) and open it."""


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


def __getattr__(name: str) -> Any:
    # EvalContext lives in fsbench.evaluation (it needs the data layer); re-exported lazily
    # here so plugins can import every contract from one place without an import cycle.
    if name == "EvalContext":
        from fsbench.evaluation import EvalContext

        return EvalContext
    raise AttributeError(f"module 'fsbench.api' has no attribute {name!r}")

"""Expected mistakes, reported as one line and exit code 2 rather than a traceback.

Every message names the thing to fix: the file, the folder, the option or the plugin.
"""

from __future__ import annotations

from pathlib import Path


class FsbenchError(Exception):
    """Base of every error the CLI reports as one line (exit code 2)."""

    exit_code = 2


class UsageError(FsbenchError):
    """A wrong option, an unknown name, a missing input."""


class PluginError(FsbenchError):
    """A plugin could not be loaded, or two plugins claim one name."""


class DatasetError(FsbenchError):
    """A dataset (folder, manifest, image) is missing or malformed.

    The path comes first in the message so that grep and editors can jump to it.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class CheckpointError(FsbenchError):
    """A checkpoint or weights file is missing, truncated, or of the wrong model."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class TrainingError(FsbenchError):
    """Training cannot go on (a loss became NaN or infinite); the last checkpoint is kept."""


class MetricError(FsbenchError):
    """A metric is undefined for the given input (one identity for SEP, too few samples...)."""

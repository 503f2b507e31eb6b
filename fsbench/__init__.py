"""fsbench: train, sample and score synthetic face-recognition datasets.

Plugins implement the hooks in `fsbench.hookspecs` with the `hookimpl` marker below.

From Python (loaded on first use, so ``import fsbench`` and ``fsbench --help`` stay light):

- `fsbench.metrics`: cst, sep, div, iou, fd, kid, prdc, verification on numpy arrays;
- `fsbench.evaluate(dataset=..., metrics=[...])`: ``fsbench evaluate``, returning the result
  (``.to_pandas()``); ``embeddings="file.npz"`` scores precomputed vectors.
"""

from typing import TYPE_CHECKING, Any

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("fsbench")

__all__ = ["__version__", "evaluate", "hookimpl", "metrics"]

if TYPE_CHECKING:  # pragma: no cover - for editors; at run time __getattr__ loads them
    from fsbench import metrics
    from fsbench.evaluate_run import evaluate

# name -> (module, attribute or None for the module itself). Loaded by name on first access:
# they import numpy (and the metrics pandas, scipy...), which `import fsbench` must not.
_LAZY = {"metrics": ("fsbench.metrics", None), "evaluate": ("fsbench.evaluate_run", "evaluate")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fsbench' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

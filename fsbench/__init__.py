"""fsbench: train, sample and score synthetic face-recognition datasets.

Plugins implement the hooks in `fsbench.hookspecs` with the `hookimpl` marker below.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("fsbench")

__all__ = ["__version__", "hookimpl"]

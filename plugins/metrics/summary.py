"""`summary`: the size of a dataset, the first column of every comparison table.

Needs no embedder: identities, images, and images per identity (DCFace's and VIGFace's
tables quote these next to every accuracy).
"""

from __future__ import annotations

import fsbench
from fsbench.api import Metric, MetricResult


class Summary(Metric):
    name = "summary"
    description = "identities, images and images per identity"
    needs = frozenset()
    primary = "images"

    def compute(self, ctx) -> MetricResult:
        import pandas as pd  # here, not at the top: the CLI imports this module for --help

        ds = ctx.dataset
        counts = ds.counts()
        per_id = pd.DataFrame({"identity": ds.identities, "images": counts})
        scalars = {
            "identities": ds.num_identities,
            "images": len(ds),
            "mean": counts.mean(),
            "std": counts.std(),
            "min": counts.min(),
            "max": counts.max(),
        }
        notes = [f"{len(ds.skipped)} unreadable image(s) skipped"] if ds.skipped else []
        return MetricResult(self.name, scalars, per_item=per_id, notes=notes)


@fsbench.hookimpl
def fsbench_register_metrics():
    return [Summary]

"""Face-recognition training and the benchmarks built on it.

Commands: ``fsbench fr train`` (fsbench.train.fr), ``fsbench benchmark fr`` (gap-to-real,
VIGFace Tables 2-3) and ``fsbench benchmark classify`` (SegTex Table 7). The modules here
import torch only when a command runs.
"""

from __future__ import annotations

import fsbench


@fsbench.hookimpl
def fsbench_register_commands(commands):
    from fsbench.plugins.fr.commands import benchmark_classify_cmd, benchmark_fr_cmd, fr_group

    commands.add(fr_group)
    commands.group("benchmark", "Benchmarks that train models on a dataset: gap-to-real, classification.")
    commands.add(benchmark_fr_cmd, under="benchmark")
    commands.add(benchmark_classify_cmd, under="benchmark")

"""Face-recognition training and the benchmarks built on it.

Commands: ``fsbench fr train`` (fsbench.train.fr), ``fsbench benchmark fr`` (gap-to-real,
VIGFace Tables 2-3) and ``fsbench benchmark classify`` (SegTex Table 7). The modules here
import torch only when a command runs.
"""

from __future__ import annotations

import fsbench


@fsbench.hookimpl
def fsbench_register_commands(cli):
    from plugins.fr.commands import benchmark_classify_cmd, benchmark_fr_cmd, benchmark_group, fr_group

    cli.add_command(fr_group)
    group = benchmark_group(cli)
    group.add_command(benchmark_fr_cmd)
    group.add_command(benchmark_classify_cmd)

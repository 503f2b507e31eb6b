"""A third-party plugin, installed as its own distribution, works end to end.

The test builds a throwaway distribution (module + dist-info with an `fsbench` entry point)
in a temporary folder, puts it on the path of a fresh `fsbench` process, and checks that
`fsbench plugins` lists it with its distribution and version and that `fsbench evaluate
--metrics hello` runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PLUGIN = textwrap.dedent(
    '''
    import fsbench
    from fsbench.api import Metric, MetricResult


    class LargestIdentity(Metric):
        """The share of images held by the largest identity."""

        name = "hello"
        description = "share of images in the largest identity"
        needs = frozenset()

        def compute(self, ctx):
            counts = ctx.dataset.counts()
            return MetricResult(self.name, {"mean": counts.max() / counts.sum()})


    @fsbench.hookimpl
    def fsbench_register_metrics():
        return [LargestIdentity]
    '''
)


def _install_throwaway(site):
    (site / "fsbench_hello.py").write_text(PLUGIN)
    info = site / "fsbench_hello-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fsbench-hello\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text("[fsbench]\nhello = fsbench_hello\n")
    (info / "RECORD").write_text("")


def _fsbench(site, *args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "fsbench.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_third_party_distribution_is_listed_and_runs(tmp_path, folder):
    site = tmp_path / "site"
    site.mkdir()
    _install_throwaway(site)
    listed = _fsbench(site, "plugins", "--json", cwd=tmp_path)["plugins"]
    hello = [p for p in listed if p["name"] == "hello"]
    assert hello == [{"kind": "metric", "name": "hello", "plugin": "hello", "distribution": "fsbench-hello",
                      "version": "0.3.1", "description": "share of images in the largest identity"}]
    assert any(p["distribution"] == "fsbench" for p in listed)  # built-ins still there

    root = folder("ds", ids=3, per_id=2, size=8)
    (root / "id_000" / "extra.png").write_bytes((root / "id_000" / "img_00.png").read_bytes())
    result = _fsbench(site, "evaluate", "--dataset", root, "--metrics", "hello,summary", "--json", cwd=tmp_path)
    assert result["metrics"]["hello"]["mean"] == 3 / 7

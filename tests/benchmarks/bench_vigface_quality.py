"""What VIGFace's embedded default shows under the default judge (issue: "What it must show").

Regenerates reports/vigface-embedded/ (results.md, results.json, contact sheets) from the
shipped run (or FSBENCH_VIGFACE_RUN), with the world it was trained on rebuilt from its recipe
(seed 0, 1,000 x 8). Every number is the judge's (its weights hash in results.json):
- virtual identities are identities: verification on `fsbench data pairs` of 100 virtual
  identities x 10 images (the same protocol on 100 x 10 images of the real world beside it), SEP;
- virtual identities are new: leakage (closest training identity) for virtual vs real-identity samples;
- real-identity samples stay their identity: source_match (nearest training identity centre);
- guidance as Table 1: IoU of genuine / impostor similarity histograms vs the world, w = 0.5 ... 3.0,
  and the mean genuine similarity.
About 15-25 minutes on 2 cores (sampling dominates); FSBENCH_VIGFACE_STEPS sets the DDIM steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "reports" / "vigface-embedded"
STEPS = int(os.environ.get("FSBENCH_VIGFACE_STEPS", "50"))
SWEEP = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def fsbench(*args: object) -> dict:
    proc = subprocess.run([sys.executable, "-m", "fsbench", *map(str, args), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_vigface_embedded_default_under_the_judge(tmp_path):
    run = os.environ.get("FSBENCH_VIGFACE_RUN", str(ROOT / "generators" / "vigface" / "embedded"))
    world = tmp_path / "world"
    fsbench("data", "make", "procedural", "--out", world, "--ids", 1000, "--per-id", 8, "--seed", 0)
    real100 = tmp_path / "real100"  # 100 identities of the world (the same people), 10 images each
    fsbench("data", "make", "procedural", "--out", real100, "--ids", 100, "--per-id", 10, "--seed", 0)
    common = ["--run", run, "--ids", 100, "--per-id", 10, "-o", f"steps={STEPS}"]
    fsbench("sample", "vigface", "--out", tmp_path / "virtual", *common)
    fsbench("sample", "vigface", "--out", tmp_path / "real", *common, "-o", "ids=real")
    res: dict = {"steps": STEPS, "run": run}
    for name, ds in (("virtual", tmp_path / "virtual"), ("world", real100), ("real", tmp_path / "real")):
        fsbench("data", "pairs", ds, "--out", tmp_path / f"{name}.csv", "--pairs", 6000)
        v = fsbench("verify", "--pairs", tmp_path / f"{name}.csv", "--root", ds)
        metrics = "sep,cst,leakage" + (",source_match" if name == "real" else "")
        ev = fsbench("evaluate", "--dataset", ds, "--reference", world, "--metrics", metrics, "--out", tmp_path / f"ev-{name}")
        res[name] = {"verification": {k: v[k] for k in ("accuracy", "std", "auc", "pairs")},
                     **{m: ev["metrics"][m] for m in ev["metrics"]}, "judge": ev["provenance"].get("judge")}
    sweep = fsbench("sweep", "vigface", "--run", run, "--vary", "guidance=" + ",".join(map(str, SWEEP)),
                    "--ids", 50, "--per-id", 10, "--reference", world, "--metrics", "iou", "-o", f"steps={STEPS}",
                    "--out", tmp_path / "sweep")
    res["sweep"] = sweep["table"]
    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("virtual", "real"):
        subprocess.run([sys.executable, "-m", "fsbench", "data", "show", tmp_path / name, "--out", OUT / f"{name}.png",
                        "--ids", "8", "--per-id", "8"], check=True, capture_output=True)
    (OUT / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(json.dumps(res, indent=1, default=str)[:4000])

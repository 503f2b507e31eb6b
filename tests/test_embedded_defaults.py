"""The embedded default runs shipped inside the package: each has its recipe, files whose
hashes the recipe names, under 20 MB each, and scores with no --run under the default judge."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from fsbench.hashing import sha256_of


@pytest.mark.parametrize("generator", ["vigface", "segtex"])
def test_the_embedded_default_is_shipped_with_its_recipe_and_samples_without_a_run(cli, tmp_path, generator):
    embedded = importlib.import_module(f"fsbench.generators.{generator}").EMBEDDED
    recipe = json.loads((embedded / "recipe.json").read_text())
    assert recipe["generator"] == generator and recipe["preset"] == "tiny"
    assert f"fsbench train {generator}" in recipe["commands"]
    for stage, info in recipe["stages"].items():
        ckpt = embedded / stage / "checkpoint.pt"
        assert sha256_of(ckpt) == info["checkpoint_sha256"] and ckpt.stat().st_size < 20_000_000
        assert info["platform"]["torch"] and info["wall_s"] > 0
    options = ["-o", "vigface.steps=4"] if generator == "vigface" else []
    out = cli.json("evaluate", "--generator", generator, "--ids", "4", "--per-id", "3", *options,
                   "--metrics", "sep,cst", "--out", tmp_path / "ev")
    assert out["provenance"]["judge"]["spec"] == "judge" and out["metrics"]["cst"]["n_identities"] == 4
    info = json.loads((Path(out["dataset"]) / "dataset.json").read_text())
    assert info["embedded_world"] is True
    stages = list(recipe["stages"])
    assert info["request"]["checkpoints"][stages[-1]] == recipe["stages"][stages[-1]]["checkpoint_sha256"]

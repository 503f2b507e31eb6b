"""The procedural world on the generator contract: `fsbench sample procedural` goes through the
core's keyed, sharded sampler and writes the bytes `fsbench data make procedural` writes."""

from __future__ import annotations

import json
from pathlib import Path

from fsbench.generators.procedural import Procedural
from fsbench.testing import check_generator


def files(root: Path, sub: str = "") -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / sub).rglob("*.*")) if p.is_file()}


def test_core_sampling_writes_the_bytes_data_make_writes(cli, tmp_path):
    made = cli.json("data", "make", "procedural", "--out", tmp_path / "made", "--ids", "3", "--per-id", "4",
                    "--seed", "5", "--workers", "1")
    assert made["images"] == 12
    sampled = cli.json("sample", "procedural", "--out", tmp_path / "sampled", "--ids", "3", "--per-id", "4",
                       "--seed", "5")
    assert sampled["images"] == 12 and sampled["complete"]
    for sub in ("id_00000000", "id_00000002", "masks", "regions"):
        a, b = files(tmp_path / "made", sub), files(tmp_path / "sampled", sub)
        assert a and a == b, sub
    info = json.loads((tmp_path / "sampled" / "dataset.json").read_text())
    assert info["embedded_world"] is True and info["request"]["seed"] == 5
    assert info["sampler"]["strengths"]["yaw_sd"] == 22.0


def test_nuisance_and_format_options_reach_the_sampler(cli, tmp_path):
    flat = cli.json("sample", "procedural", "--out", tmp_path / "flat", "--ids", "2", "--per-id", "2",
                    "-o", "yaw_sd=0", "-o", "profile_p=0", "-o", "size=48", "-o", "masks=false")
    assert flat["image_size"] == [48, 48] and not (tmp_path / "flat" / "masks").exists()
    info = json.loads((tmp_path / "flat" / "dataset.json").read_text())
    assert info["request"]["options"]["yaw_sd"] == 0 and info["request"]["config"]["masks"] is False
    bad = cli("sample", "procedural", "--out", tmp_path / "bad", "-o", "yaw_sd=nan")
    assert bad.exit_code == 2 and "yaw_sd" in bad.stderr and "Traceback" not in bad.stderr


def test_the_contract_kit_passes_the_procedural_world(tmp_path):
    report = check_generator(Procedural, None, tmp_path)
    assert report["stages"] == [] and report["images"] == 6 and report["sharded_equals_unsharded"]

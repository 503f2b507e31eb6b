"""`fsbench segtex edit` (generators/segtex/edit.py): SegTex's attribute editing, Fig. 6a.

On the embedded default: the command writes the grid and its record; column "original" is the
sampler's own image 0 (with steps 2, 4 and 7 at zero strength); an edited column recolours its
region and keeps the other regions' pixels; mistakes are one line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fsbench.generators.segtex import EMBEDDED
from fsbench.generators.segtex.edit import EDIT_REGIONS, REGION_CLASSES, edit_identities, grid_size

# steps 2, 4 and 7 at zero strength: then the sampler's image 0 is step 3's painting of step 1's map
NO_NUISANCE = {"texture_jitter": 0, "pose_max_yaw": 0, "pose_max_pitch": 0, "augment_brightness": 0,
               "augment_contrast": 0, "augment_balance": 0, "augment_blur": 0}


@pytest.fixture(scope="module")
def edited(one_torch_thread):
    """Four identities of the embedded default, seed 0, every region edited."""
    from fsbench.registry import get_registry
    from fsbench.sampling import plan_sampling

    plan = plan_sampling(get_registry().generator("segtex"), None, n_ids=4, per_id=1, seed=0, overrides=NO_NUISANCE)
    return plan.sampler, edit_identities(plan.sampler, 0, 4, tuple(EDIT_REGIONS))


def test_edit_command_writes_the_grid_and_its_record(cli, tmp_path, one_torch_thread):
    out = tmp_path / "figs" / "grid.png"
    record = cli.json("segtex", "edit", "--out", out, "--ids", "2")
    assert out.exists() and record["grid"] == str(out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == grid_size(2, 1 + 1 + len(EDIT_REGIONS))  # map, original, 4 edits
    beside = json.loads(out.with_suffix(".json").read_text())
    assert beside == {k: v for k, v in record.items() if k != "record"}
    assert beside["columns"] == ["map", "original", "skin", "hair", "eyes", "mouth"]
    status = {s: json.loads((EMBEDDED / s / "status.json").read_text())["checkpoint_sha256"] for s in ("segmap", "texture")}
    assert beside["checkpoints"] == status and beside["seed"] == 0
    rows = beside["identities"]
    assert [r["identity"] for r in rows] == ["segtex_000000", "segtex_000001"]
    for r in rows:
        assert set(r["donors"]) == set(EDIT_REGIONS)
        assert all(d["item"] != r["source"]["item"] for d in r["donors"].values())
    assert not list(out.parent.glob(".*tmp"))  # written through a temporary name, nothing left behind

    again = cli("segtex", "edit", "--out", out, "--ids", "2", "--regions", "hair")
    assert again.exit_code == 0, again.stderr
    assert again.stdout.splitlines()[0] == f"wrote {out}"
    with Image.open(out) as im:
        assert im.size == grid_size(2, 3)
    assert json.loads(out.with_suffix(".json").read_text())["identities"][0]["donors"]["hair"] == rows[0]["donors"]["hair"]


def test_the_original_column_is_the_samplers_image_0_without_nuisance(edited):
    from fsbench.api import SampleKey

    sampler, grid = edited
    samples = sampler.sample([SampleKey(f"segtex_{r:06d}", r, 0, 0) for r in range(2)])
    for r, sample in enumerate(samples):
        assert np.array_equal(sample.aux["masks"][1], grid.maps[r])
        assert np.array_equal(sample.image, grid.images[r, 0])


def test_an_edit_recolours_its_region_and_keeps_the_other_regions(edited):
    _, grid = edited
    measured = {}
    for r in range(4):
        for c, region in enumerate(grid.columns[1:], start=1):
            diff = np.abs(grid.images[r, c].astype(np.float64) - grid.images[r, 0]).mean(-1)
            inside = np.isin(grid.maps[r], REGION_CLASSES[region])
            other = np.isin(grid.maps[r], [k for x, cl in REGION_CLASSES.items() if x != region for k in cl])
            measured[r, region] = (diff[inside].mean() if inside.any() else None, diff[other].mean())
    for region in ("skin", "hair"):  # the regions that fill the embedded default's 32 px maps
        ratios = []
        for r in range(4):
            changed, kept = measured[r, region]
            assert changed is not None, f"identity {r}'s map has no {region} pixels"
            assert changed > 2 * kept, (r, region, changed, kept)  # a skin edit bleeds into thin hair
            ratios.append(changed / kept)
        assert np.median(ratios) > 3, (region, ratios)
    for r in range(4):
        # eyes and mouth are a few pixels at 32 px and the tiny texture network barely reads their
        # crops: swapping them leaves the face closer to the original than a skin or hair edit
        drawn = min(measured[r, x][0] for x in ("skin", "hair"))
        for region in ("eyes", "mouth"):
            changed, kept = measured[r, region]
            assert kept < drawn / 3, (r, region, kept, drawn)


@pytest.mark.parametrize(("args", "names"), [
    (("--regions", "skin,nose"), ("--regions", "'nose'")),
    (("--regions", "hair,hair"), ("--regions", "hair")),
    (("--ids", "101"), ("--ids 101", "100")),
    (("--ids", "0"), ("--ids 0",)),
])
def test_bad_input_is_one_line(cli, tmp_path, args, names):
    result = cli("segtex", "edit", "--out", tmp_path / "g.png", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(n in lines[0] for n in names), lines[0]
    assert not [p for p in tmp_path.iterdir() if p.name != "_cache"]  # the cli fixture's cache

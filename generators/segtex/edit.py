"""Attribute editing as the paper's Fig. 6a: one identity's map painted again with one region's
texture swapped, everything else kept; `fsbench segtex edit` saves the grid.

Why: Sec. IV's "attribute editing" claims that the texture network changes one attribute
(hair colour, skin tone, "simulated makeup") when only that region's texture crop changes,
while the rest of the face, and so the identity, stays. Fig. 6a shows it; this module makes
the figure from any trained run (the embedded default when none is given) and records what
each column is a function of, so the claim can be looked at and measured (the test compares
the change inside the edited region with the change on the other regions' classes).

What a row holds, and why each choice:

- Identity r is `SegTexSampler`'s: its crops (skin, hair, l_eye, r_eye, mouth) come from the
  texture pool's item ``sampler.source(seed, r)``, and its map is step 1's map of its image 0,
  drawn from the sampler's own generator ``[seed, r, 0, slot "maps"]`` through whichever step
  fills the ``maps`` slot. So column "original" is what `fsbench sample segtex` paints for
  image 0 before steps 2 and 4-7.
- Steps 2 (colour jitter), 4 (pose), 5-6 (plug-in points) and 7 (augment) are skipped: each
  would change every column, and the edit must be the only difference between a column and
  the original. Step 3 (the slot ``texture_application``, the texture network unless a plugin
  replaced it) paints every cell of a row from the same map.
- Column X replaces only region X's crop(s) (``eyes``: both eye crops) by a donor pool item's.
  The donor is a function of (seed, r, X) alone (not of --regions or --ids): 8 candidates
  drawn from ``default_rng([seed, r, DONOR_STREAM, k])`` (k: X's index in `EDIT_REGIONS`),
  and of them the one whose crop colour (mean over the crop's non-black pixels) is farthest
  from the identity's own, so a column shows an edit rather than a look-alike.
- A column "map" shows the map in `fsbench.report.contact_sheet.PALETTE` colours: a region the
  map does not draw has nothing to recolour (the embedded tiny default draws eyes and mouth a
  few pixels wide at 32 px, and its texture network barely reads their crops, so those columns
  barely change; see the command's JSON ``changes``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from fsbench import ui
from fsbench.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from fsbench.generators.segtex.sampler import SegTexSampler

__all__ = ["DONOR_STREAM", "EDIT_REGIONS", "REGION_CLASSES", "EditGrid", "edit_cmd", "edit_identities", "grid_size",
           "make_edit_grid", "parse_regions", "region_changes", "render_grid"]

# what --regions names -> the crops it replaces (generators.segtex.data.REGIONS' names)
EDIT_REGIONS: dict[str, tuple[str, ...]] = {"skin": ("skin",), "hair": ("hair",), "eyes": ("l_eye", "r_eye"),
                                             "mouth": ("mouth",)}
# the map classes (CelebAMask-HQ indices) each crop is cut from in the embedded world
# (generators.procedural.items' region strips): the pixels an edit of that region should recolour
REGION_CLASSES: dict[str, tuple[int, ...]] = {"skin": (1,), "hair": (13,), "eyes": (4, 5), "mouth": (10, 11, 12)}
DONOR_STREAM = 6_000  # the donors' generator stream, apart from the sampler's [seed, r, j, slot] streams
DONOR_CANDIDATES = 8
CELL = 96  # px of one upscaled image
PAD, GAP, HEADER, CAPTION, LABEL_W = 8, 4, 24, 18, 116


def parse_regions(spec: str) -> tuple[str, ...]:
    """``"skin,hair"`` -> ("skin", "hair"); an unknown, repeated or missing name is a one-line UsageError."""
    names = tuple(p.strip() for p in spec.split(",") if p.strip())
    if not names:
        raise UsageError(f"--regions {spec!r}: name at least one region of {', '.join(EDIT_REGIONS)}")
    for name in names:
        if name not in EDIT_REGIONS:
            raise UsageError(f"--regions: unknown region {name!r} (choose from {', '.join(EDIT_REGIONS)})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--regions: {', '.join(repeated)} named twice")
    return names


def _crop_index(region: str) -> list[int]:
    from fsbench.generators.segtex.data import REGIONS

    return [REGIONS.index(c) for c in EDIT_REGIONS[region]]


def _mean_colour(crops: np.ndarray) -> np.ndarray:
    """(..., S, S, 3) crops, black outside their region -> (..., 3) mean colour of the region."""
    flat = crops.reshape(*crops.shape[:-3], -1, 3).astype(np.float64)
    inside = flat.max(-1) > 8  # JPEG leaves near-black noise outside the region
    return (flat * inside[..., None]).sum(-2) / np.maximum(inside.sum(-1), 1)[..., None]


@dataclass
class EditGrid:
    """What `edit_identities` painted: row r is identity r, column 0 the original."""

    columns: tuple[str, ...]  # "original", then the edited regions in --regions order
    images: np.ndarray  # (ids, len(columns), S, S, 3) uint8
    maps: np.ndarray  # (ids, S, S) uint8: the one map of each row (step 1, image 0)
    sources: list[int]  # pool item of each identity (sampler.source(seed, r))
    donors: list[dict[str, int]]  # per row, region -> the pool item whose crop(s) column region painted with
    map_params: list[dict[str, Any]]  # what step 1 recorded for each row's map


def _donor(sampler: SegTexSampler, seed: int, row: int, region: str, own: np.ndarray, exclude: int) -> int:
    """The donor of `region` for identity `row` (see the module docstring); `own` (k, S, S, 3) its crops."""
    n = len(sampler.context.pool_paths)
    k = list(EDIT_REGIONS).index(region)
    others = np.setdiff1d(np.arange(n), [exclude])
    rng = np.random.default_rng([seed, row, DONOR_STREAM, k])
    candidates = rng.choice(others, min(DONOR_CANDIDATES, len(others)), replace=False)
    crops = sampler.context.crops(candidates.tolist(), _crop_index(region))  # (c, k, S, S, 3)
    distance = np.linalg.norm(_mean_colour(crops) - _mean_colour(own)[None], axis=-1).sum(-1)  # (c,)
    return int(candidates[int(np.argmax(distance))])


def _step(sampler: SegTexSampler, slot: str) -> Any:
    found = [s for s in sampler.steps if s.slot == slot]
    if not found:
        raise UsageError(f"segtex edit: no step fills the pipeline slot {slot!r} (see `fsbench plugins`)")
    return found[0]


def edit_identities(sampler: SegTexSampler, seed: int, n_ids: int, regions: Sequence[str]) -> EditGrid:
    """Paint identities 0 .. n_ids-1 of `sampler` once as they are and once per region of `regions`
    with that region's crop(s) replaced by a donor's; the map and every other crop are kept."""
    import torch

    from fsbench.api import SampleKey

    pool_n = len(sampler.context.pool_paths)
    if not 1 <= n_ids <= pool_n:
        raise UsageError(f"--ids {n_ids}: choose 1 to {pool_n}, the texture pool's faces (each row is one of them)")
    if pool_n < 2:
        raise UsageError("the texture pool holds one face: there is no other texture to swap in (-o textures=DIR)")
    for region in regions:
        if region not in EDIT_REGIONS:
            raise UsageError(f"unknown region {region!r} (choose from {', '.join(EDIT_REGIONS)})")
    ctx, s = sampler.context, sampler.config.image_size
    keys = [SampleKey(f"segtex_{r:06d}", r, 0, seed) for r in range(n_ids)]
    sources = [sampler.source(seed, r) for r in range(n_ids)]

    def rngs(slot: str) -> list[np.random.Generator]:  # the sampler's streams of image 0
        return [np.random.default_rng([seed, r, 0, sampler.slot_index[slot]]) for r in range(n_ids)]

    batch = {"images": np.zeros((n_ids, s, s, 3), np.uint8), "maps": None, "keys": keys,
             "params": [{} for _ in keys], "regions": ctx.crops(sources), "segtex": ctx}
    with torch.no_grad():
        batch = sampler.pipeline.run(batch, rngs("maps"), steps=[_step(sampler, "maps")])
    maps, base = batch["maps"], batch["regions"]  # base: the crops step 1 leaves to paint with
    columns = ("original", *regions)
    cells = np.repeat(base[:, None], len(columns), axis=1)  # (ids, cols, 5, S, S, 3)
    donors: list[dict[str, int]] = []
    for r in range(n_ids):
        picked = {}
        for c, region in enumerate(regions, start=1):
            idx = _crop_index(region)
            donor = _donor(sampler, seed, r, region, base[r, idx], sources[r])
            cells[r, c, idx] = ctx.crops([donor], idx)[0]
            picked[region] = donor
        donors.append(picked)
    painter = _step(sampler, "texture_application")
    flat = cells.reshape(n_ids * len(columns), *cells.shape[2:])
    cell_keys = [k for k in keys for _ in columns]
    cell_rngs = [g for g in rngs("texture_application") for _ in columns]  # equal draws along a row
    images = np.empty((len(flat), s, s, 3), np.uint8)
    step = max(1, int(sampler.batch_size))
    with torch.no_grad():
        for a in range(0, len(flat), step):
            b = slice(a, a + step)
            part = {"images": np.zeros((len(flat[b]), s, s, 3), np.uint8),
                    "maps": np.ascontiguousarray(np.repeat(maps, len(columns), axis=0)[b]),
                    "keys": cell_keys[b], "params": [{} for _ in cell_keys[b]],
                    "regions": np.ascontiguousarray(flat[b]), "segtex": ctx}
            images[b] = sampler.pipeline.run(part, cell_rngs[b], steps=[painter])["images"]
    return EditGrid(columns, images.reshape(n_ids, len(columns), s, s, 3), np.ascontiguousarray(maps), sources,
                    donors, [p.get("maps", {}) for p in batch["params"]])


def region_changes(grid: EditGrid) -> list[dict[str, dict[str, float | None]]]:
    """Per row, per edited column: the mean |change| (0-255, over RGB) from the original on the
    map's pixels of the edited region's classes (``region``; None when the map has none) and on
    the pixels of the other regions' classes (``other_regions``)."""
    out = []
    for r in range(len(grid.maps)):
        row: dict[str, dict[str, float | None]] = {}
        for c, region in enumerate(grid.columns[1:], start=1):
            diff = np.abs(grid.images[r, c].astype(np.float64) - grid.images[r, 0]).mean(-1)
            inside = np.isin(grid.maps[r], REGION_CLASSES[region])
            other = np.isin(grid.maps[r], [k for x, cl in REGION_CLASSES.items() if x != region for k in cl])
            row[region] = {"region": round(float(diff[inside].mean()), 3) if inside.any() else None,
                           "other_regions": round(float(diff[other].mean()), 3) if other.any() else None}
        out.append(row)
    return out


def grid_size(n_rows: int, n_images: int, cell: int = CELL) -> tuple[int, int]:
    """(width, height) in px of `render_grid`'s PNG: n_images columns (the map, then the images)."""
    return (2 * PAD + LABEL_W + n_images * (cell + GAP) - GAP,
            2 * PAD + HEADER + n_rows * (cell + CAPTION + GAP) - GAP)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError, ValueError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _upscale(image: np.ndarray, cell: int) -> Any:
    from PIL import Image

    return Image.fromarray(image).resize((cell, cell), Image.Resampling.NEAREST)  # the network's own pixels


def render_grid(grid: EditGrid, cell: int = CELL) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array: a header of column names, one row per identity
    (its label at the left, the map in palette colours, then the painted columns), and under
    each cell the pool item its edited crop came from."""
    from PIL import Image, ImageDraw

    from fsbench.report.contact_sheet import PALETTE

    n_rows, n_cols = grid.images.shape[:2]
    width, height = grid_size(n_rows, n_cols + 1, cell)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    label, small = _font(14), _font(11)
    x0 = PAD + LABEL_W
    for c, name in enumerate(("map", *grid.columns)):
        x = x0 + c * (cell + GAP) + cell // 2
        draw.text((x, PAD + HEADER // 2), name, fill=(0, 0, 0), font=label, anchor="mm")
    for r in range(n_rows):
        y = PAD + HEADER + r * (cell + CAPTION + GAP)
        draw.text((PAD, y + cell // 2 - 9), f"identity {r}", fill=(0, 0, 0), font=label, anchor="lm")
        draw.text((PAD, y + cell // 2 + 9), f"pool #{grid.sources[r]}", fill=(90, 90, 90), font=small, anchor="lm")
        tiles = [PALETTE[np.clip(grid.maps[r], 0, len(PALETTE) - 1)], *grid.images[r]]
        captions = ["step 1, image 0", f"own #{grid.sources[r]}",
                    *(f"from #{grid.donors[r][region]}" for region in grid.columns[1:])]
        for c, (tile, caption) in enumerate(zip(tiles, captions)):
            x = x0 + c * (cell + GAP)
            sheet.paste(_upscale(np.ascontiguousarray(tile), cell), (x, y))
            draw.text((x + cell // 2, y + cell + CAPTION // 2), caption, fill=(90, 90, 90), font=small, anchor="mm")
    return np.asarray(sheet)


def _replace(path: Path, write: Any) -> None:
    """write(tmp) then rename onto `path`: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def make_edit_grid(run_dir: str | Path | None, out: str | Path, *, ids: int = 4, seed: int = 0,
                   regions: Sequence[str] = tuple(EDIT_REGIONS), overrides: Mapping[str, Any] | None = None,
                   cell: int = CELL) -> dict[str, Any]:
    """Open the run (None: the embedded default) as `fsbench sample segtex` does, paint the grid,
    write `out` (PNG) and its record ``out`` with suffix .json beside it; returns the record."""
    from PIL import Image

    from fsbench.registry import get_registry
    from fsbench.sampling import plan_sampling

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: the grid is a PNG; name it *.png")
    regions = parse_regions(",".join(regions))
    if ids < 1:
        raise UsageError(f"--ids {ids}: need at least one identity")
    plan = plan_sampling(get_registry().generator("segtex"), run_dir, n_ids=ids, per_id=1, seed=seed,
                         overrides=dict(overrides or {}))
    sampler = plan.sampler
    grid = edit_identities(sampler, seed, ids, regions)
    paths = sampler.context.pool_paths
    record = {
        "grid": str(out), "generator": "segtex", "run": plan.info["run"], "embedded_world": plan.info["embedded_world"],
        "checkpoints": plan.request.checkpoints, "seed": seed, "options": plan.request.options,
        "textures": sampler.info.get("textures"), "image_size": sampler.config.image_size, "cell": cell,
        "columns": ["map", *grid.columns], "regions": {r: list(EDIT_REGIONS[r]) for r in regions},
        "region_classes": {r: list(REGION_CLASSES[r]) for r in regions},
        "painter": sampler.record.get("texture_application"), "map_step": sampler.record.get("maps"),
        "skipped_slots": [slot for slot in sampler.record if slot not in ("maps", "texture_application")],
        "donor_rule": f"of {DONOR_CANDIDATES} pool items drawn from default_rng([seed, row, {DONOR_STREAM}, k]), "
                      "the one whose crop colour is farthest from the identity's",
        "identities": [
            {"row": r, "identity": f"segtex_{r:06d}", "source": {"item": grid.sources[r], "path": paths[grid.sources[r]]},
             "map": grid.map_params[r],
             "donors": {x: {"item": d, "path": paths[d]} for x, d in grid.donors[r].items()}}
            for r in range(ids)],
        "changes": region_changes(grid),
    }
    sheet = render_grid(grid, cell)
    out.parent.mkdir(parents=True, exist_ok=True)
    beside = out.with_suffix(".json")
    _replace(beside, lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=str) + "\n"))
    _replace(out, lambda tmp: Image.fromarray(sheet).save(tmp, format="PNG"))
    return {**record, "record": str(beside)}


@click.command("edit", short_help="Attribute editing (SegTex Figure 6a): one region's texture swapped, the rest kept.")
@click.option("--run", "--run-dir", "run_dir", type=click.Path(path_type=Path),
              help="Trained SegTex run (default: the embedded one).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="PNG to write; its record goes beside it as .json.")
@click.option("--ids", default=4, show_default=True, help="Identities (rows), at most the texture pool's faces.")
@click.option("--seed", default=0, show_default=True, help="Sampling seed: identities, maps and donors.")
@click.option("--regions", default=",".join(EDIT_REGIONS), show_default=True,
              help="Regions to edit, one column each (eyes: both eye crops).")
@click.option("-o", "options", multiple=True, metavar="KEY=VALUE", help="Sampling option (see `fsbench plugins show segtex`).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout, nothing else.")
def edit_cmd(run_dir: Path | None, out: Path, ids: int, seed: int, regions: str, options: tuple[str, ...],
             as_json: bool) -> None:
    """Attribute editing (SegTex Figure 6a): each identity painted as it is, then with one region's
    texture swapped for another face's, map and other crops kept; a labelled grid.

    \b
    Examples:
      fsbench segtex edit --out editing.png
      fsbench segtex edit --run runs/stx --out edit.png --ids 6 --seed 3 --regions hair,eyes -o weights=last
    """
    from fsbench.options import parse_pairs

    record = make_edit_grid(run_dir, out, ids=ids, seed=seed, regions=parse_regions(regions),
                            overrides=parse_pairs(options))
    if as_json:
        ui.emit(record, as_json=True)
    else:
        ui.out.print(f"wrote {out}", soft_wrap=True, markup=False)
        ui.out.print(f"wrote {record['record']}", soft_wrap=True, markup=False)

"""Contact sheets: identities in rows, their images in columns, masks optionally overlaid.

The quickest way to see whether a dataset looks right (faces that read as faces, identity
kept along a row, variation across it), so `fsbench data show` draws one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fsbench.errors import DatasetError, UsageError

# One colour per CelebAMask-HQ class (background .. cloth); chosen to tell neighbours apart.
PALETTE = np.array([
    [0, 0, 0], [204, 153, 102], [255, 0, 0], [160, 160, 255], [0, 200, 255], [0, 100, 255],
    [120, 255, 0], [0, 160, 60], [255, 0, 255], [150, 0, 150], [255, 255, 0], [255, 120, 0],
    [200, 60, 0], [90, 50, 20], [0, 255, 160], [255, 200, 200], [255, 255, 255], [255, 150, 150],
    [60, 60, 140],
], dtype=np.uint8)


def _mask(dataset, i: int, shape: tuple[int, int]) -> np.ndarray | None:
    from PIL import Image

    path = dataset.aux_path("masks", i, ".png")
    if not path.exists():
        return None
    try:
        with Image.open(path) as im:
            m = np.asarray(im)
    except OSError as exc:
        raise DatasetError(path, f"unreadable mask ({exc})") from None
    if m.ndim != 2 or m.shape != shape:
        raise DatasetError(path, f"mask is {m.shape}, expected a {shape[0]}x{shape[1]} map of class indices")
    return m


def sheet_array(dataset, n_ids: int = 8, per_id: int = 8, overlay_masks: bool = False,
                alpha: float = 0.45) -> tuple[np.ndarray, list[str]]:
    """The grid as an array: (n_ids * h, per_id * w, 3) uint8, and the identity of each row.

    Cells of identities with fewer images stay grey. With `overlay_masks`, each image's
    class map (``masks/<identity>/<name>.png``) is blended over it in `PALETTE` colours;
    a dataset without masks is an error rather than a silent plain sheet.
    """
    if n_ids < 1 or per_id < 1:
        raise UsageError(f"contact sheet needs at least 1 identity and 1 image per identity (got {n_ids}, {per_id})")
    h, w = dataset.image_size
    ids = dataset.identities[:n_ids]
    by_label: dict[int, list[int]] = {}
    for i, it in enumerate(dataset.items):
        if it.label < len(ids):
            by_label.setdefault(it.label, []).append(i)
    sheet = np.full((len(ids) * h, per_id * w, 3), 96, np.uint8)
    n_masks = 0
    for row in range(len(ids)):
        for col, i in enumerate(by_label.get(row, [])[:per_id]):
            img = dataset.read(i)
            if overlay_masks:
                m = _mask(dataset, i, (h, w))
                if m is not None:
                    n_masks += 1
                    colours = PALETTE[np.clip(m, 0, len(PALETTE) - 1)].astype(np.float32)
                    keep = (m > 0)[..., None]
                    img = np.where(keep, img * (1 - alpha) + colours * alpha, img).astype(np.uint8)
            sheet[row * h:(row + 1) * h, col * w:(col + 1) * w] = img
    if overlay_masks and n_masks == 0:
        raise DatasetError(dataset.root, "no masks/ to overlay (make the dataset with masks, or drop --masks)")
    return sheet, [str(name) for name in ids]


def contact_sheet(dataset, out: str | Path, n_ids: int = 8, per_id: int = 8, overlay_masks: bool = False,
                  alpha: float = 0.45) -> Path:
    """Write a PNG grid of the first `n_ids` identities x their first `per_id` images (`sheet_array`)."""
    from PIL import Image

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"{out}: the contact sheet is a PNG; name it *.png")
    sheet, _ = sheet_array(dataset, n_ids, per_id, overlay_masks, alpha)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(sheet).save(tmp, format="PNG")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out

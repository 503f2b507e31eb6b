"""What `fsbench data info` checks beyond opening: every image decodes to its last byte, and
every item has its companion files.

Companion (aux) files live under ``root/<kind>/<identity>/<stem>.<ext>`` for each kind that
dataset.json lists in ``aux_dirs`` (masks, regions). Some aux folders are not per item (the
procedural world's ``benchmarks/``): a kind counts as per item when it holds a folder named
after one of the dataset's identities, and then every item must have a file of its stem
there, whatever the extension (masks are PNG, region crops JPEG).
"""

from __future__ import annotations

import os
from pathlib import Path

from fsbench.data.dataset import FaceDataset

__all__ = ["decode_all", "missing_aux"]


def decode_all(ds: FaceDataset) -> None:
    """Decode every image once: a truncated or corrupt file raises a DatasetError naming it
    (or, with the dataset's skip_bad, is listed in ``ds.skipped``)."""
    for _ in ds.batches():
        pass


def missing_aux(ds: FaceDataset) -> list[tuple[str, str]]:
    """(expected aux file, the item it belongs to) for every companion file that is absent,
    as paths relative to the dataset root, in item order."""
    kinds = [k for k in ds.info.get("aux_dirs", ()) if isinstance(k, str) and (ds.root / k).is_dir()]
    identities = set(ds.identities)
    missing: list[tuple[str, str]] = []
    for kind in kinds:
        base = ds.root / kind
        if not any(e.is_dir() and e.name in identities for e in os.scandir(base)):
            continue  # not a per-item folder (benchmarks/)
        stems: dict[str, set[str]] = {}
        for item in ds.items:
            if item.identity not in stems:
                folder = base / item.identity
                try:
                    stems[item.identity] = {os.path.splitext(e.name)[0] for e in os.scandir(folder) if e.is_file()}
                except (FileNotFoundError, NotADirectoryError):
                    stems[item.identity] = set()
            stem = Path(item.path).stem
            if stem not in stems[item.identity]:
                missing.append((f"{kind}/{item.identity}/{stem}.*", item.path))
    return missing

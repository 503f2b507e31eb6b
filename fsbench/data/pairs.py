"""Face-verification pair sets: insightface ``.bin`` packs, LFW ``pairs.txt``, ``pairs.csv``.

Every reader returns one `PairSet`: the distinct images (encoded bytes from a pack, or files
on disk), two index arrays saying which images form each pair, and the is-same flags. An
image named by many pairs is listed, and later embedded, once. Readers check that every
image file exists before anything is embedded, so a typo in a pairs file fails in a second
rather than after an hour of embedding.

A pairs file reads only what the user pointed at: a path that leads out of the image root
(``../``, an absolute path, a symlink pointing elsewhere) is refused, naming the file and the
path, unless the caller allows it (`--allow-outside-root`). Duplicate and contradictory
pairs (the same two images twice, or marked both same and different) are a warning with
their counts: they are kept, as the file says, but they bias the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsbench.data.images import decode_image, read_image
from fsbench.errors import DatasetError

__all__ = ["PairSet", "make_pairs", "open_pairs", "read_bin_pairs", "read_lfw_pairs", "read_pairs_csv"]

_TRUE = {"1", "true", "yes", "same", "y", "t"}
_FALSE = {"0", "false", "no", "different", "diff", "n", "f"}


@dataclass
class PairSet:
    """N verification pairs over M distinct images.

    `images[i]` is either encoded image bytes (from a .bin pack) or a file path; pair k
    compares `images[index_a[k]]` with `images[index_b[k]]`. `folds` (N,) holds given test
    folds (a pairs.csv ``fold`` column) or None for the protocol's unshuffled KFold.
    """

    name: str
    source: Path
    images: list[bytes | Path]
    index_a: np.ndarray  # (N,) int64 into images
    index_b: np.ndarray  # (N,) int64
    issame: np.ndarray  # (N,) bool
    folds: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.issame)

    def load(self, i: int) -> np.ndarray:
        """Image i as uint8 (H, W, 3) RGB; a DatasetError names the pack item or the file."""
        item = self.images[i]
        if isinstance(item, Path):
            return read_image(item)
        return decode_image(item, f"{self.source}[image {i}]")


def read_bin_pairs(path: str | Path) -> PairSet:
    """An insightface verification pack, read through the restricted unpickler."""
    from fsbench.data.binpack import read_bin

    path = Path(path)
    images, issame = read_bin(path)
    n = len(issame)
    return PairSet(
        name=path.stem,
        source=path,
        images=list(images),
        index_a=np.arange(0, 2 * n, 2, dtype=np.int64),
        index_b=np.arange(1, 2 * n, 2, dtype=np.int64),
        issame=np.asarray(issame, dtype=bool),
    )


def _check_inside(pairs_file: Path, root: Path, paths: list[Path]) -> None:
    """Refuse image paths that resolve (``..``, absolute, symlinks) outside `root`."""
    base = root.resolve()
    outside = [p for p in paths if not p.resolve().is_relative_to(base)]
    if outside:
        raise DatasetError(pairs_file, f"names {outside[0]}, outside the image root {root} ({len(outside)} of the "
                                       f"{len(paths)} images it names are outside; pass --allow-outside-root "
                                       "to read them)")


def _warn_repeats(pairs_file: Path, index_a: np.ndarray, index_b: np.ndarray, issame: np.ndarray) -> None:
    """Count pairs listed again (same two images, same label) and image pairs marked both
    same and different; one warning line each."""
    seen: dict[tuple[int, int], set[bool]] = {}
    duplicates = 0
    for a, b, s in zip(index_a.tolist(), index_b.tolist(), issame.tolist(), strict=True):
        labels = seen.setdefault((min(a, b), max(a, b)), set())
        duplicates += s in labels
        labels.add(s)
    contradictory = sum(len(labels) > 1 for labels in seen.values())
    from fsbench import ui

    if duplicates:
        ui.warn(f"{pairs_file}: {duplicates} duplicate pair(s) (the same two images with the same label again); "
                "each counts in the accuracy as often as it is listed")
    if contradictory:
        ui.warn(f"{pairs_file}: {contradictory} contradictory pair(s) (the same two images marked both same and "
                "different); no threshold can get both right")


def _index_paths(pairs_file: Path, paths_a: list[Path], paths_b: list[Path], issame, folds,
                 name: str, root: Path | None = None) -> PairSet:
    """Deduplicate the image paths, check they exist (and, given `root`, that none leads out of
    it), and build the PairSet."""
    unique: dict[Path, int] = {}
    for p in (*paths_a, *paths_b):
        unique.setdefault(p, len(unique))
    if root is not None:
        _check_inside(pairs_file, root, list(unique))
    missing = [p for p in unique if not p.is_file()]
    if missing:
        raise DatasetError(
            missing[0],
            f"missing image named by {pairs_file} ({len(missing)} of the {len(unique)} images it names are missing)",
        )
    pairset = PairSet(
        name=name,
        source=pairs_file,
        images=list(unique),
        index_a=np.array([unique[p] for p in paths_a], dtype=np.int64),
        index_b=np.array([unique[p] for p in paths_b], dtype=np.int64),
        issame=np.asarray(issame, dtype=bool),
        folds=None if folds is None else np.asarray(folds),
    )
    _warn_repeats(pairs_file, pairset.index_a, pairset.index_b, pairset.issame)
    return pairset


def read_lfw_pairs(pairs_txt: str | Path, root: str | Path, suffix: str = ".jpg", *,
                   allow_outside_root: bool = False) -> PairSet:
    """LFW's pairs.txt: header "folds<TAB>n", then per fold n matched and n mismatched lines.

    Matched lines are ``name n1 n2``, mismatched ``name1 n1 name2 n2``; images live at
    ``root/name/name_%04d.jpg`` numbered from 1. A one-number header ("1100", as in
    pairsDevTrain.txt) means one fold. Pairs keep the file's order, so the protocol's
    unshuffled 10-fold split is LFW's own 10 folds. A name leading out of `root` is refused
    unless `allow_outside_root`.
    """
    pairs_txt, root = Path(pairs_txt), Path(root)
    try:
        lines = pairs_txt.read_text().splitlines()
    except FileNotFoundError:
        raise DatasetError(pairs_txt, "no such pairs file") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise DatasetError(pairs_txt, f"not a text pairs file ({exc.__class__.__name__})") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise DatasetError(pairs_txt, "empty pairs file")
    try:
        header = [int(x) for x in lines[0].split()]
    except ValueError:
        raise DatasetError(pairs_txt, f"line 1: expected a header like '10<TAB>300', got {lines[0]!r}") from None
    if len(header) == 2:
        n_folds, per_class = header
    elif len(header) == 1:
        n_folds, per_class = 1, header[0]
    else:
        raise DatasetError(pairs_txt, f"line 1: expected a header like '10<TAB>300', got {lines[0]!r}")
    expected = n_folds * 2 * per_class
    if len(lines) - 1 != expected:
        raise DatasetError(pairs_txt, f"header promises {expected} pairs ({n_folds} folds x 2 x {per_class}) "
                                      f"but the file has {len(lines) - 1} pair lines")

    def image(name: str, number: str, lineno: int) -> Path:
        try:
            k = int(number)
        except ValueError:
            raise DatasetError(pairs_txt, f"line {lineno}: image number {number!r} is not an integer") from None
        return root / name / f"{name}_{k:04d}{suffix}"

    paths_a, paths_b, issame = [], [], []
    for lineno, line in enumerate(lines[1:], start=2):
        f = line.split()
        if len(f) == 3:
            paths_a.append(image(f[0], f[1], lineno))
            paths_b.append(image(f[0], f[2], lineno))
            issame.append(True)
        elif len(f) == 4:
            paths_a.append(image(f[0], f[1], lineno))
            paths_b.append(image(f[2], f[3], lineno))
            issame.append(False)
        else:
            raise DatasetError(pairs_txt, f"line {lineno}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {line!r}")
    return _index_paths(pairs_txt, paths_a, paths_b, issame, None, name="lfw" if pairs_txt.stem == "pairs" else pairs_txt.stem,
                        root=None if allow_outside_root else root)


def _parse_same(pairs_csv: Path, values, rows_offset: int = 2) -> list[bool]:
    out = []
    for k, v in enumerate(values):
        text = str(v).strip().lower()
        if text in _TRUE:
            out.append(True)
        elif text in _FALSE:
            out.append(False)
        else:
            raise DatasetError(pairs_csv, f"row {k + rows_offset}: 'same' is {v!r}, expected 1/0 or true/false")
    return out


def read_pairs_csv(pairs_csv: str | Path, root: str | Path | None = None, *,
                   allow_outside_root: bool = False) -> PairSet:
    """A CSV with columns path_a, path_b, same (1/0, true/false) and optionally fold.

    Paths are relative to `root` (default: the CSV's folder), and may not lead out of it
    unless `allow_outside_root`. A ``fold`` column fixes the
    test folds; without it the protocol's unshuffled KFold applies.
    """
    import pandas as pd

    pairs_csv = Path(pairs_csv)
    root = Path(root) if root is not None else pairs_csv.parent
    try:
        df = pd.read_csv(pairs_csv, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DatasetError(pairs_csv, "no such pairs file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, IsADirectoryError) as exc:
        raise DatasetError(pairs_csv, f"not a readable CSV ({exc.__class__.__name__}: {exc})".splitlines()[0]) from None
    df.columns = [c.strip().lower() for c in df.columns]
    missing = [c for c in ("path_a", "path_b", "same") if c not in df.columns]
    if missing:
        raise DatasetError(pairs_csv, f"missing column(s) {', '.join(missing)} (need path_a, path_b, same[, fold]; "
                                      f"found {', '.join(df.columns)})")
    if df.empty:
        raise DatasetError(pairs_csv, "holds no pairs")
    issame = _parse_same(pairs_csv, df["same"])
    folds = None
    if "fold" in df.columns:
        try:
            folds = df["fold"].astype(int).to_numpy()
        except ValueError:
            raise DatasetError(pairs_csv, "column 'fold' must hold integers") from None
    paths_a = [root / p.strip() for p in df["path_a"]]
    paths_b = [root / p.strip() for p in df["path_b"]]
    return _index_paths(pairs_csv, paths_a, paths_b, issame, folds, name=pairs_csv.stem,
                        root=None if allow_outside_root else root)


def open_pairs(path: str | Path, root: str | Path | None = None, *, allow_outside_root: bool = False) -> PairSet:
    """Pick the reader by suffix: .bin pack, .csv pairs, .txt LFW pairs (needs `root`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bin":
        return read_bin_pairs(path)
    if suffix == ".csv":
        return read_pairs_csv(path, root, allow_outside_root=allow_outside_root)
    if suffix == ".txt":
        return read_lfw_pairs(path, root if root is not None else path.parent, allow_outside_root=allow_outside_root)
    raise DatasetError(path, "unknown pairs format: expected an insightface .bin, a pairs.csv or LFW's pairs.txt")


def make_pairs(ds: Any, n_pairs: int = 6000, seed: int = 0, folds: int = 10) -> list[dict[str, Any]]:
    """Verification pairs over any dataset, LFW-style: half genuine, half impostor, `folds`
    identity-disjoint folds of equal size (every identity belongs to one fold; a fold's
    impostor pairs join two of its identities), drawn with `seed`. Rows for a pairs.csv:
    path_a, path_b, same, fold. A pair is never drawn twice while distinct ones remain."""
    from fsbench.errors import UsageError

    if n_pairs < 2 * folds or n_pairs % (2 * folds):
        raise UsageError(f"--pairs {n_pairs}: need a positive multiple of {2 * folds} (half genuine, half impostor "
                         f"in each of {folds} folds)")
    rng = np.random.default_rng(seed)
    labels = ds.labels
    members = [np.flatnonzero(labels == k) for k in range(ds.num_identities)]
    order = rng.permutation(ds.num_identities)
    fold_ids = [order[f::folds] for f in range(folds)]
    per_fold = n_pairs // (2 * folds)
    rows: list[dict[str, Any]] = []
    for f, ids in enumerate(fold_ids):
        multi = [i for i in ids if len(members[i]) >= 2]
        if not multi or len(ids) < 2:
            raise UsageError(f"{ds.root}: fold {f} of {folds} has too few identities for pairs "
                             f"({len(ids)} identities, {len(multi)} with two images); sample more identities")
        for same in (1, 0):
            seen: set[tuple[int, int]] = set()
            tries = made = 0
            while made < per_fold:
                if same:
                    i = multi[rng.integers(len(multi))]
                    a, b = rng.choice(members[i], 2, replace=False)
                else:
                    i, j = rng.choice(ids, 2, replace=False)
                    a, b = rng.choice(members[i]), rng.choice(members[j])
                key = (min(a, b), max(a, b))
                tries += 1
                if key in seen and tries < 50 * per_fold:
                    continue
                seen.add(key)
                made += 1
                rows.append({"path_a": ds.items[a].path, "path_b": ds.items[b].path, "same": same, "fold": f})
    return rows

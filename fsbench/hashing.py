"""Content hashes of weight files: part of every cache key, so a changed file is never mistaken
for the old one. Hashing a 250 MB backbone takes a second, so each file is hashed once per
process per (path, size, mtime)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_seen: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 hex


def sha256_of(path: str | Path) -> str:
    """Full sha256 hex digest of one file."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _seen:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _seen[key] = h.hexdigest()
    return _seen[key]


def weights_id(*paths: str | Path) -> str:
    """12 hex digits identifying the contents of one or more files, in the order given."""
    if len(paths) == 1:
        return sha256_of(paths[0])[:12]
    return hashlib.sha256("".join(sha256_of(p) for p in paths).encode()).hexdigest()[:12]

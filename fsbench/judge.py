"""Which embedder judges when the user names none: the default judge.

Order, first match wins:

1. ``FSBENCH_EMBEDDER`` in the environment (``FSBENCH_EMBEDDER=dlib:aligned``);
2. a user config file, ``$FSBENCH_CONFIG`` or ``~/.config/fsbench/config.toml``
   (``$XDG_CONFIG_HOME/fsbench/config.toml`` when that is set), key ``embedder = "..."``;
3. the data's lineage (its dataset.json): data of the embedded procedural world, or sampled
   from a generator trained on it (``embedded_world: true``), is judged by ``judge``, the
   small IResNet shipped with fsbench (trained on the world's seed-9001 identities, which no
   generator trains on); anything else by ``dlib``, because a judge trained on the world says
   nothing about photographs.

Core only returns embedder spec strings and the reason; the `judge` embedder itself is a
plugin (plugins/embedders/judge.py). A `--embedder` given on the command line always wins.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fsbench.errors import UsageError

__all__ = [
    "FALLBACK", "JUDGE", "JUDGE_WORLD_SEED", "benchmark_info", "config_path", "default_embedder",
    "is_embedded_world",
]

JUDGE = "judge"  # the embedder spec of the shipped judge
FALLBACK = "dlib"  # the default for data that is not of the embedded world
# The world seed of the judge's training identities. Identities are drawn from
# (world seed, identity index), so this world's people are other people than those of any
# seed-0 world, the one generators train on (and of the demo's seeds 1..3).
JUDGE_WORLD_SEED = 9001


def config_path() -> Path:
    """The user config file: $FSBENCH_CONFIG, else $XDG_CONFIG_HOME or ~/.config, /fsbench/config.toml."""
    explicit = os.environ.get("FSBENCH_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "fsbench" / "config.toml"


def _configured() -> tuple[str, str] | None:
    """(spec, reason) from the environment or the config file, or None."""
    env = os.environ.get("FSBENCH_EMBEDDER", "").strip()
    if env:
        return env, f"FSBENCH_EMBEDDER={env} (environment)"
    path = config_path()
    if not path.is_file():
        if os.environ.get("FSBENCH_CONFIG"):
            raise UsageError(f"FSBENCH_CONFIG={path}: no such config file")
        return None
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: unreadable config file ({exc})") from None
    spec = config.get("embedder")
    if spec is None:
        return None
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"{path}: `embedder` must be a non-empty string such as \"dlib:aligned\", got {spec!r}")
    return spec.strip(), f"embedder = \"{spec.strip()}\" in {path}"


def is_embedded_world(info: dict[str, Any] | None) -> bool:
    """True for data of the embedded procedural world, or sampled from a run trained on it."""
    if not isinstance(info, dict):
        return False
    return info.get("generator") == "procedural" or info.get("embedded_world") is True


def _lineage(info: dict[str, Any] | None) -> str:
    if not isinstance(info, dict) or not info:
        return "no dataset.json"
    gen = info.get("generator")
    seed = (info.get("config") or {}).get("seed") if isinstance(info.get("config"), dict) else None
    parts = [f"generator {gen}" if gen else "no generator named"]
    if seed is not None:
        parts.append(f"world seed {seed}")
    if "embedded_world" in info:
        parts.append(f"embedded_world {info['embedded_world']}")
    return ", ".join(parts)


def default_embedder(info: dict[str, Any] | None, references: Iterable[dict[str, Any] | None] = ()) -> tuple[str, str]:
    """(embedder spec, reason) for data whose dataset.json info is `info` (None: no dataset.json).

    `references`: the infos of other sets scored in the same space (a --reference); the judge
    is chosen only when every one of them is of the embedded world too.
    """
    configured = _configured()
    if configured is not None:
        return configured
    infos = [info, *references]
    strangers = [i for i in infos if not is_embedded_world(i)]
    if not strangers:
        reason = f"embedded-world data (dataset.json lineage: {_lineage(info)}): fsbench's shipped judge"
        seed = (info or {}).get("config", {}).get("seed") if isinstance((info or {}).get("config"), dict) else None
        if info and info.get("generator") == "procedural" and seed == JUDGE_WORLD_SEED:
            reason += f" (caution: world seed {JUDGE_WORLD_SEED} is the judge's own training world)"
        return JUDGE, reason
    which = "the reference" if strangers[0] is not info else "dataset.json"
    return FALLBACK, (
        f"not embedded-world data ({which} lineage: {_lineage(strangers[0])}): "
        "the world-trained judge says nothing about photographs"
    )


def benchmark_info(path: str | Path | None) -> dict[str, Any] | None:
    """The lineage of a verification benchmark file (.bin, pairs.csv) or image root.

    A benchmark written by the procedural world sits in ``WORLD/benchmarks/NAME/`` beside a
    ``bench.json`` (its seed, size and nuisance strengths), below the world's dataset.json.
    Returns that dataset.json's info, else a procedural info made from bench.json, else the
    dataset.json found in the folder itself, else None (e.g. a real lfw.bin).
    """
    if path is None:
        return None
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    bench = _read_json(folder / "bench.json")
    if bench is not None and {"seed", "strengths"} <= set(bench):
        world = _read_json(folder.parent.parent / "dataset.json")
        if world is not None and world.get("generator") == "procedural":
            return world
        return {"generator": "procedural", "config": {"seed": bench["seed"]}, "benchmark": folder.name}
    return _read_json(folder / "dataset.json")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None

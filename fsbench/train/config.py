"""Training configs: a preset dict plus type-checked overrides, unknown keys refused.

Overrides arrive as strings from ``-o key=value`` or as Python values; each is converted to
the type of the preset's default by `fsbench.options` (bool accepts true/false/1/0/yes/no; a
tuple of ints accepts "24,30,36"; NaN and inf are never a number). A key the preset does not
have is an error naming the known ones. Configs stay plain dicts (``cfg["lr"]``): the schema
is built from the preset's defaults on the fly, so the conversions are the options layer's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fsbench import options

__all__ = ["TRAIN_BOUNDS", "parse_overrides", "resolve"]

# Ranges of the keys training configs share; a key a preset lacks is ignored. Values outside
# them do not fail later with a clear message: they train NaN weights or exhaust memory.
TRAIN_BOUNDS: dict[str, dict[str, Any]] = {
    "lr": {"min": 0, "min_exclusive": True},
    "lr_decay": {"min": 0, "max": 1, "min_exclusive": True},
    "lr_steps": {"min": 0},
    "momentum": {"min": 0, "max": 1, "max_exclusive": True},
    "weight_decay": {"min": 0},
    "dropout": {"min": 0, "max": 1, "max_exclusive": True},
    "batch_size": {"min": 1},
    "epochs": {"min": 1},
    "input_size": {"min": 16, "max": 1024},
    "embedding_size": {"min": 1},
    "width": {"min": 1},
    "s": {"min": 0, "min_exclusive": True},
    "m": {"min": 0},
    "seed": {"min": 0},
    "warmup_steps": {"min": 0},
    "max_steps": {"min": 0},
    "checkpoint_every": {"min": 1},
    "workers": {"min": 0},
}


def parse_overrides(pairs: Iterable[str], what: str = "-o") -> dict[str, str]:
    """["lr=0.05", "network=r18"] -> {"lr": "0.05", "network": "r18"} (`fsbench.options.parse_pairs`)."""
    return options.parse_pairs(pairs, what)


def resolve(
    presets: Mapping[str, Mapping[str, Any]],
    preset: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    where: str = "config",
    bounds: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The preset's dict with overrides converted to the defaults' types and range-checked.

    `bounds` maps keys to `fsbench.options.opt` range keywords; `TRAIN_BOUNDS` by default.
    """
    # an unknown preset gets an empty schema: `options.preset` refuses the name before using it
    schema = options.schema_from_defaults("Config", presets.get(preset, {}), TRAIN_BOUNDS if bounds is None else bounds)
    return options.as_dict(options.preset(schema, presets, preset, overrides, where=where))

"""Training configs: a preset dict plus type-checked overrides, unknown keys refused.

Overrides arrive as strings from ``-o key=value`` or as Python values; each is converted to
the type of the preset's default (bool accepts true/false/1/0/yes/no; a tuple of ints
accepts "24,30,36"). A key the preset does not have is an error naming the known ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fsbench.errors import UsageError

__all__ = ["parse_overrides", "resolve"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_overrides(pairs: Iterable[str], what: str = "-o") -> dict[str, str]:
    """["lr=0.05", "network=r18"] -> {"lr": "0.05", "network": "r18"}."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _convert(key: str, value: Any, default: Any, where: str) -> Any:
    def bad() -> UsageError:
        return UsageError(f"{where}: {key}={value!r} is not a valid {type(default).__name__}")

    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise bad()
    if isinstance(default, tuple):
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
        kinds = {type(d) for d in default} or {int}
        cast = float if float in kinds else int
        try:
            return tuple(cast(v) for v in items)
        except (TypeError, ValueError):
            raise bad() from None
    if isinstance(default, int):
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad() from None
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad() from None
    if isinstance(default, str):
        if not isinstance(value, (str, int, float)):
            raise bad()
        return str(value)
    return value


def resolve(
    presets: Mapping[str, Mapping[str, Any]], preset: str, overrides: Mapping[str, Any] | None = None, *, where: str = "config"
) -> dict[str, Any]:
    """The preset's dict with overrides applied and converted to the defaults' types."""
    if preset not in presets:
        raise UsageError(f"{where}: unknown preset {preset!r} (known: {', '.join(presets)})")
    cfg = dict(presets[preset])
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise UsageError(f"{where}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(cfg))})")
    for key, value in overrides.items():
        cfg[key] = _convert(key, value, cfg[key], where)
    return cfg

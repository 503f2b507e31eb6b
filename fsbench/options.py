"""One typed options layer: every ``-o KEY=VALUE``, preset and plugin option goes through here.

A schema is a frozen dataclass whose fields are declared with `opt` (default, help, range)::

    @dataclass(frozen=True)
    class Options:
        bins: int = opt(100, "histogram bins", min=1)
        fmr: float = opt(1e-3, "false match rate", min=0, max=1, min_exclusive=True)
        margin: Literal["arcface", "cosface"] = opt("arcface", "loss margin")
        steps: tuple[int, ...] = opt((24, 30), "decay epochs", min=1)

`parse(Options, {"bins": "50"}, where="metric 'iou'")` converts strings from the command line
to the annotated types, refuses what does not fit (NaN and inf always: a NaN learning rate
trains NaN weights without a word) and checks the ranges. Every refusal is a one-line
`UsageError` that names the option, the value and what would be valid, so the CLI prints it
as it is. `describe` renders the same declarations for ``fsbench plugins show``, and
`to_dict` records the resolved options in config.json in a form `parse` reads back.

Only the standard library is imported here: ``fsbench --help`` must stay fast.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import types
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from fsbench.errors import UsageError

__all__ = [
    "as_dict",
    "check_presets",
    "describe",
    "opt",
    "parse",
    "parse_pairs",
    "preset",
    "refuse_unknown",
    "schema_from_defaults",
    "to_dict",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"none", ""})
_BOOL_WORDS = "true/false, 1/0, yes/no, on/off"


# --------------------------------------------------------------------------- declaring


def opt(
    default: Any,
    help: str = "",
    *,
    min: float | None = None,
    max: float | None = None,
    choices: Iterable[Any] | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
) -> Any:
    """A dataclass field with its help and valid range; ranges apply to each element of a tuple.

    Mutable defaults (lists, dicts) get a default_factory so that instances never share them.
    """
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "choices": None if choices is None else tuple(choices),
        "min_exclusive": min_exclusive,
        "max_exclusive": max_exclusive,
    }
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=functools.partial(copy.deepcopy, default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class _Kind:
    """A field's annotation taken apart: what `_convert` and `_type_text` work from."""

    base: Any  # bool, int, float, str, tuple or Any
    optional: bool = False
    choices: tuple[Any, ...] | None = None  # from Literal[...]
    items: tuple[_Kind, ...] = ()  # tuple element kinds: one for tuple[X, ...], n for fixed
    fixed: bool = False  # tuple[X, Y] (fixed length) rather than tuple[X, ...]


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    kind: _Kind
    field: dataclasses.Field
    meta: Mapping[str, Any]

    def default(self) -> Any:
        if self.field.default is not dataclasses.MISSING:
            return self.field.default
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return dataclasses.MISSING


def _kind(hint: Any) -> _Kind:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(rest) == len(args):
            raise TypeError(f"options: unsupported union {hint!r} (only X | None)")
        return dataclasses.replace(_kind(rest[0]), optional=True)
    if origin is Literal:
        return _Kind(base=type(args[0]), choices=tuple(args))
    if hint is tuple or origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return _Kind(base=tuple, items=(_kind(args[0] if args else Any),))
        return _Kind(base=tuple, items=tuple(_kind(a) for a in args), fixed=True)
    if hint in (bool, int, float, str) or hint is Any:
        return _Kind(base=hint)
    raise TypeError(f"options: unsupported option type {hint!r}")


def _specs(schema: type) -> dict[str, _Spec]:
    """The schema's fields in declaration order, with their annotations resolved."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"options: {schema!r} is not a dataclass")
    hints = get_type_hints(schema)
    return {
        f.name: _Spec(f.name, _kind(hints[f.name]), f, f.metadata)
        for f in dataclasses.fields(schema)
        if f.init
    }


# --------------------------------------------------------------------------- describing


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


def _range_text(meta: Mapping[str, Any]) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    lo_x, hi_x = meta.get("min_exclusive", False), meta.get("max_exclusive", False)
    if lo is not None and hi is not None:
        return f" in {'(' if lo_x else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_x else ']'}"
    if lo is not None:
        return f" {'>' if lo_x else '>='} {_fmt(lo)}"
    if hi is not None:
        return f" {'<' if hi_x else '<='} {_fmt(hi)}"
    return ""


def _type_text(kind: _Kind, meta: Mapping[str, Any]) -> str:
    """Readable type with its range: "int >= 1", "float in [0, 1)", "one of: a, b"."""
    choices = kind.choices or meta.get("choices")
    if kind.base is tuple:
        if kind.fixed:
            names = [_type_text(k, {}) for k in kind.items]
            if len(set(names)) == 1:
                text = f"{len(names)} comma-separated {names[0]}s"
            else:
                text = f"comma-separated {', '.join(names)}"
        else:
            text = f"comma-separated {_type_text(kind.items[0], {})}s"
        text += _range_text(meta)
        if choices:
            text += f" from: {', '.join(map(str, choices))}"
    elif choices:
        text = f"one of: {', '.join(map(str, choices))}"
    elif kind.base is Any:
        text = "any"
    else:
        text = kind.base.__name__ + _range_text(meta)
    return f"{text} or none" if kind.optional else text


def describe(schema: type) -> list[dict[str, Any]]:
    """One row per option (name, type, default, help): what ``fsbench plugins show`` prints."""
    rows = []
    for spec in _specs(schema).values():
        default = spec.default()
        rows.append({
            "name": spec.name,
            "type": _type_text(spec.kind, spec.meta),
            "default": None if default is dataclasses.MISSING else _jsonable(default),
            "help": spec.meta.get("help", ""),
        })
    return rows


# --------------------------------------------------------------------------- converting


class _Bad(ValueError):
    """A value that does not convert; `why` completes "key=value ..." in the message."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise _Bad("must be a finite number")
    return x


def _convert(kind: _Kind, value: Any, text: str) -> Any:
    """`value` (a string from the command line, or a Python value) as `kind`; `text` for errors."""
    if kind.optional and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
        return None
    base = kind.base
    if base is Any:
        return value
    if base is tuple:
        return _convert_tuple(kind, value, text)
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        word = value.strip().lower() if isinstance(value, str) else None
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _Bad(f"is not a valid bool ({_BOOL_WORDS})")
    bad = _Bad(f"is not a valid {text}")
    if isinstance(value, bool):  # True is an int to Python, never to a user
        raise bad
    if base is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            number = value
        elif isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
            try:  # "2e6" is an integer written short; "3.5" is not
                number = float(value.strip())
            except ValueError:
                raise bad from None
        else:
            raise bad
        if not math.isfinite(number) or not number.is_integer():
            raise bad
        return int(number)
    if base is float:
        if isinstance(value, (int, float)):
            return _finite(float(value))
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise bad from None
            return _finite(number)
        raise bad
    if base is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)):
            return str(value)
        raise bad
    raise bad


def _convert_tuple(kind: _Kind, value: Any, text: str) -> tuple[Any, ...]:
    if isinstance(value, str):
        parts: list[Any] = [p.strip() for p in value.split(",")] if value.strip() else []
        if any(p == "" for p in parts):
            raise _Bad(f"has an empty element; expected {text}")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise _Bad(f"is not valid; expected {text}")
    if kind.fixed and len(parts) != len(kind.items):
        raise _Bad(f"has {len(parts)} value(s); expected {text}")
    kinds = kind.items if kind.fixed else kind.items * len(parts)
    out = []
    for k, part in zip(kinds, parts):
        try:
            out.append(_convert(k, part, _type_text(k, {})))
        except _Bad as exc:
            raise _Bad(f"has an element {part!r} that {exc.why}; expected {text}") from None
    return tuple(out)


def _in_range(x: Any, meta: Mapping[str, Any]) -> bool:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return True
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (x <= lo if meta.get("min_exclusive") else x < lo):
        return False
    if hi is not None and (x >= hi if meta.get("max_exclusive") else x > hi):
        return False
    return True


def _check(spec: _Spec, value: Any, where: str) -> Any:
    """The converted and range-checked value of one option, or a one-line UsageError."""
    text = _type_text(spec.kind, spec.meta)
    try:
        out = _convert(spec.kind, value, text)
    except _Bad as exc:
        why = exc.why
        if why == "must be a finite number":
            why += f" ({text})"
        raise UsageError(f"{where}: {spec.name}={value!r} {why}") from None
    if out is None:
        return out
    elements = out if isinstance(out, tuple) else (out,)
    choices = spec.kind.choices or spec.meta.get("choices")
    if choices is not None and any(x not in choices for x in elements):
        raise UsageError(f"{where}: {spec.name}={value!r} is not allowed; expected {text}")
    if not all(_in_range(x, spec.meta) for x in elements):
        raise UsageError(f"{where}: {spec.name}={value!r} is out of range; expected {text}")
    return out


# --------------------------------------------------------------------------- parsing


def refuse_unknown(values: Iterable[str], known: Iterable[str], where: str, what: str = "option") -> None:
    """A one-line error for names not in `known`, with the closest known name when there is one."""
    known = list(known)
    unknown = sorted(set(values) - set(known))
    if not unknown:
        return
    guesses = [(u, difflib.get_close_matches(u, known, n=1)) for u in unknown]
    hints = [f"{g[0]} for {u}" if len(unknown) > 1 else g[0] for u, g in guesses if g]
    hint = f"; did you mean {', '.join(hints)}?" if hints else ""
    raise UsageError(
        f"{where}: unknown {what}(s) {', '.join(unknown)}{hint} (known: {', '.join(known) or 'none'})"
    )


def parse(schema: type, values: Mapping[str, Any], *, where: str, base: Any = None, what: str = "option") -> Any:
    """An instance of `schema`: `base` (or the defaults) with `values` converted and checked.

    `where` starts every error ("metric 'iou'", "procedural"); `what` names the kind of key
    in the unknown-key error. A ValueError from the schema's ``__post_init__`` (a rule over
    several fields) is reported as a UsageError too.
    """
    specs = _specs(schema)
    refuse_unknown(values, specs, where, what)
    changes = {key: _check(specs[key], value, where) for key, value in values.items()}
    if base is None:
        missing = [n for n, s in specs.items() if n not in changes and s.default() is dataclasses.MISSING]
        if missing:
            raise UsageError(f"{where}: {what}(s) {', '.join(missing)} must be given")
    try:
        return schema(**changes) if base is None else dataclasses.replace(base, **changes)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def parse_pairs(pairs: Iterable[str], option: str = "-o") -> dict[str, str]:
    """``["lr=0.05", "network=r18"]`` -> ``{"lr": "0.05", "network": "r18"}``; the schema converts.

    The one KEY=VALUE parser of the command line; a later pair overrides an earlier one.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    return x


def as_dict(instance: Any) -> dict[str, Any]:
    """The options as a plain dict of their Python values (tuples stay tuples)."""
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


def to_dict(instance: Any) -> dict[str, Any]:
    """The options as JSON-safe values (tuples -> lists) for config.json; `parse` reads it back."""
    return {k: _jsonable(v) for k, v in as_dict(instance).items()}


# --------------------------------------------------------------------------- presets


def preset(
    schema: type, presets: Mapping[str, Mapping[str, Any]], name: str, overrides: Mapping[str, Any] | None = None,
    *, where: str,
) -> Any:
    """Preset `name` of `presets` (each a partial mapping over `schema`) with `overrides` applied."""
    if name not in presets:
        hint = difflib.get_close_matches(name, list(presets), n=1)
        raise UsageError(f"{where}: unknown preset {name!r}{f'; did you mean {hint[0]}?' if hint else ''} "
                         f"(known: {', '.join(presets) or 'none'})")
    base = parse(schema, presets[name], where=f"{where} (preset {name!r})")
    return parse(schema, overrides or {}, where=where, base=base)


def check_presets(schema: type, presets: Mapping[str, Mapping[str, Any]], where: str) -> dict[str, Any]:
    """Every preset parsed, so that a bad preset fails when it is registered, not when it is used."""
    return {name: parse(schema, values, where=f"{where} (preset {name!r})") for name, values in presets.items()}


def _infer(default: Any) -> Any:
    """The option type a plain default implies: its type; a tuple of ints or of floats; else Any."""
    if isinstance(default, (bool, int, float, str)):
        return type(default)
    if isinstance(default, tuple):
        return tuple[float, ...] if any(isinstance(x, float) for x in default) else tuple[int, ...]
    return Any


def schema_from_defaults(
    name: str, defaults: Mapping[str, Any], bounds: Mapping[str, Mapping[str, Any]] | None = None,
) -> type:
    """A frozen dataclass schema typed by the defaults' values (for configs kept as plain dicts).

    `bounds` maps a key to `opt` keywords (``{"lr": {"min": 0, "min_exclusive": True}}``);
    keys not in `defaults` are ignored, so one bounds table can serve several presets.
    """
    bounds = bounds or {}
    fields = [(key, _infer(value), opt(value, **bounds.get(key, {}))) for key, value in defaults.items()]
    return dataclasses.make_dataclass(name, fields, frozen=True)

"""The plugin manager: finds plugins, collects what they register, looks things up by name.

Plugins come from the ``fsbench`` entry-point group (fsbench's own built-ins included), from
``.py`` files in the folder named by ``FSBENCH_PLUGINS_DIR``, and from `Registry.register`
(tests, notebooks). ``FSBENCH_PLUGINS=a,b`` loads only the entry points named a and b
(empty: none), the way llm's ``LLM_LOAD_PLUGINS`` does.

Every registered class remembers which plugin gave it and from which distribution, so
`fsbench plugins` can say where a metric came from and a name clash names both sides.

A broken plugin never breaks the others. A plugin that fails to import, implements an
unknown hook, or raises in a ``register`` hook is left out and named in one line of
`load_errors` (listed by `fsbench plugins`). A contract violation (an item of the wrong base
class, an invalid name, two plugins registering one name, a bad generator declaration) is a
load error too: the offending item is left out (for a clash, both sides), and using its name
raises the PluginError naming both plugins, so only a command that needs it fails.
`Registry.check()` raises the first of these problems, for plugin authors' tests.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from fsbench import api, hookspecs
from fsbench.errors import PluginError, UsageError

ENTRY_POINT_GROUP = "fsbench"
# kind -> (hook name, base class)
KINDS: dict[str, tuple[str, type]] = {
    "generator": ("fsbench_register_generators", api.Generator),
    "metric": ("fsbench_register_metrics", api.Metric),
    "embedder": ("fsbench_register_embedders", api.Embedder),
    "format": ("fsbench_register_formats", api.DatasetFormat),
    "pipeline_step": ("fsbench_register_pipeline_steps", api.PipelineStep),
}
# Names end up in cache files and on command lines: no spaces, slashes or colons.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    cls: type
    plugin: str  # the plugin (entry point / module) that registered it
    distribution: str  # the installed distribution it came from, or "(registered)"
    version: str


class Registry:
    def __init__(self, *, entry_points: bool = True, plugins_dir: str | Path | None = None) -> None:
        self.pm = pluggy.PluginManager("fsbench")
        self.pm.add_hookspecs(hookspecs)
        self._origin: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self._entries: dict[str, dict[str, Entry]] | None = None
        self._load_errors: list[str] = []  # found while loading (import, hooks, commands)
        self._collect_errors: list[str] = []  # found while collecting items (hooks, contracts)
        self._broken: dict[tuple[str, str], str] = {}  # (kind, name) -> why that name is unusable
        if entry_points:
            self._load_entry_points()
        plugins_dir = plugins_dir or os.environ.get("FSBENCH_PLUGINS_DIR")
        if plugins_dir:
            self._load_plugins_dir(Path(plugins_dir))
        for _ in range(len(self.pm.get_plugins()) + 1):  # a plugin with a misspelled hook is left out, and named
            try:
                self._check()
                break
            except PluginError as exc:
                self._load_errors.append(str(exc))

    @property
    def load_errors(self) -> list[str]:
        """One line per plugin left out or item refused, naming the plugin (and both sides of
        a clash); collecting the items first so that hook failures are listed too."""
        self._collect()
        return [*self._load_errors, *self._collect_errors]

    # ------------------------------------------------------------------ loading

    def _load_entry_points(self) -> None:
        allow = os.environ.get("FSBENCH_PLUGINS")
        allowed = None if allow is None else {a.strip() for a in allow.split(",") if a.strip()}
        seen: set[tuple[str, str]] = set()
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if allowed is not None and ep.name not in allowed:
                continue
            if (ep.name, ep.value) in seen:
                continue  # the same distribution found twice on sys.path
            seen.add((ep.name, ep.value))
            dist = getattr(ep, "dist", None)
            origin = (dist.name, dist.version) if dist is not None else ("?", "?")
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break fsbench
                self._load_errors.append(f"plugin {ep.name!r} from {origin[0]} failed to load: {exc}")
                continue
            try:
                self._register(module, ep.name, origin)
            except PluginError as exc:
                self._load_errors.append(str(exc))

    def _load_plugins_dir(self, folder: Path) -> None:
        if not folder.is_dir():
            raise UsageError(f"{folder}: FSBENCH_PLUGINS_DIR is not a folder")
        for path in sorted(folder.glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"fsbench_local_{path.stem}", path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # as an import would: dataclasses look their module up there
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(spec.name, None)
                self._load_errors.append(f"plugin file {path} failed to load: {exc}")
                continue
            try:
                self._register(module, path.stem, (str(folder), "-"))
            except PluginError as exc:
                self._load_errors.append(str(exc))

    def _register(self, plugin: Any, name: str, origin: tuple[str, str]) -> None:
        if self.pm.has_plugin(name):
            raise PluginError(f"two plugins are called {name!r}: {self._origin[name][0]} and {origin[0]}")
        self.pm.register(plugin, name=name)
        self._origin[name] = origin
        self._entries = None

    def _check(self) -> None:
        """Fail loudly on a misspelled hook (pytest's check_pending)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) if exc.plugin is not None else "?"
            if exc.plugin is not None:
                self.pm.unregister(exc.plugin)
            raise PluginError(f"plugin {name!r} implements an unknown hook: {exc}") from None

    def register(self, plugin: ModuleType | object, name: str | None = None) -> None:
        """Register a module or object holding hook implementations (tests, notebooks)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        self._register(plugin, name, ("(registered)", "-"))
        self._check()

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._origin.pop(name, None)
        self._entries = None

    # ------------------------------------------------------------------ collecting

    def _collect(self) -> dict[str, dict[str, Entry]]:
        if self._entries is not None:
            return self._entries
        entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        errors: list[str] = []
        broken: dict[tuple[str, str], str] = {}

        def refuse(kind: str, name: Any, message: str) -> None:
            errors.append(message)
            if isinstance(name, str):
                broken.setdefault((kind, name), message)

        for kind, (hook_name, base) in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                dist, version = self._origin.get(impl.plugin_name, ("?", "?"))
                try:
                    classes = list(impl.function() or [])
                except Exception as exc:  # this plugin's items are left out; the others load
                    reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
                    errors.append(f"plugin {impl.plugin_name!r} failed in {hook_name}: {reason}")
                    continue
                for cls in classes:
                    name = getattr(cls, "name", None)
                    if not (isinstance(cls, type) and issubclass(cls, base)):
                        refuse(kind, name, f"plugin {impl.plugin_name!r} registered {cls!r} as a {kind}, "
                                           f"but it is not a subclass of fsbench.api.{base.__name__}")
                        continue
                    if not isinstance(name, str) or not NAME_RE.match(name):
                        refuse(kind, name, f"plugin {impl.plugin_name!r}: {kind} {cls.__name__} has an invalid name "
                                           f"{name!r} (lower case letters, digits, '_', '.', '-')")
                        continue
                    if (kind, name) in broken:  # a third claimant of a clashing name
                        refuse(kind, name, f"plugin {impl.plugin_name!r} ({dist}) also registers the {kind} {name!r}")
                        continue
                    if name in entries[kind]:  # neither side wins: the name is unusable until one goes
                        other = entries[kind].pop(name)
                        refuse(kind, name, f"two plugins register the {kind} {name!r}: {other.plugin!r} "
                                           f"({other.distribution}) and {impl.plugin_name!r} ({dist})")
                        continue
                    if kind == "generator":
                        try:
                            cls.check_declaration()
                        except ValueError as exc:
                            refuse(kind, name, f"plugin {impl.plugin_name!r}: generator {name!r}: {exc}")
                            continue
                    entries[kind][name] = Entry(kind, name, cls, impl.plugin_name, dist, version)
        self._entries, self._collect_errors, self._broken = entries, errors, broken
        return entries

    def check(self) -> None:
        """Raise the first problem of `load_errors` as a PluginError (strict: plugin tests, CI)."""
        errors = self.load_errors
        if errors:
            raise PluginError(errors[0] + (f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""))

    def entries(self, kind: str | None = None) -> list[Entry]:
        collected = self._collect()
        kinds = [kind] if kind else list(KINDS)
        return [e for k in kinds for _, e in sorted(collected[k].items())]

    def names(self, kind: str) -> list[str]:
        return sorted(self._collect()[kind])

    def get(self, kind: str, name: str) -> type:
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}")
        found = self._collect()[kind].get(name)
        if found is not None:
            return found.cls
        if (kind, name) in self._broken:  # a clash or a refused item: name the plugin(s)
            raise PluginError(self._broken[kind, name])
        known = self.names(kind)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(known) if known else "none installed"
        failed = self.load_errors
        broken = f"; {len(failed)} plugin problem(s), see `fsbench plugins`" if failed else ""
        raise UsageError(f"unknown {kind} {name!r}{hint} (known: {listing}{broken})")

    # ------------------------------------------------------------------ instances

    def embedder(self, spec: str) -> api.Embedder:
        """``NAME[:OPTION]`` -> an Embedder instance (``dlib:aligned``, ``insightface:/m.onnx``)."""
        name, _, option = spec.partition(":")
        return self.get("embedder", name)(option or None)

    def metric(self, spec: str, **options: Any) -> api.Metric:
        """``NAME[:OPTION]`` -> a Metric instance; the option arrives as ``option=...``."""
        name, _, option = spec.partition(":")
        if option:
            options["option"] = option
        try:
            return self.get("metric", name)(**options)
        except TypeError as exc:
            raise UsageError(f"metric {name!r}: bad options {sorted(options)} ({exc})") from None

    def generator(self, name: str) -> api.Generator:
        return self.get("generator", name)()

    def describe(self, name: str, kind: str | None = None) -> dict[str, Any]:
        """Everything `fsbench plugins show NAME` prints: origin, and each option with its type,
        default and meaning (a generator: stages, presets, config and sampling options)."""
        from fsbench.options import describe

        found = [e for e in self.entries(kind) if e.name == name]
        if not found:
            if kind:
                self.get(kind, name)  # raises, with "did you mean"
            raise UsageError(f"no plugin item called {name!r} (see `fsbench plugins`)")
        if len(found) > 1:
            kinds = ", ".join(e.kind for e in found)
            raise UsageError(f"{name!r} names a {kinds}: pass --kind")
        e = found[0]
        out: dict[str, Any] = {"kind": e.kind, "name": e.name, "plugin": e.plugin, "distribution": e.distribution,
                               "version": e.version, "description": e.cls.description}
        cls = e.cls
        if e.kind == "generator":
            out["stages"] = [{"name": s.name, "needs": list(s.needs), "description": s.description} for s in cls.stages]
            out["presets"] = {k: dict(v) for k, v in cls.presets.items()}
            out["config"] = describe(cls.Config)
            out["sample_options"] = describe(cls.SampleOptions)
        elif getattr(cls, "Options", None) is not None:
            out["options"] = describe(cls.Options)
        return out

    def add_commands(self, cli: Any) -> None:
        """Each plugin's commands, through the `Commands` facade; a plugin that fails here is
        named in one line and the others' commands still load."""
        from fsbench.commands import Commands

        for impl in self.pm.hook.fsbench_register_commands.get_hookimpls():
            try:
                impl.function(commands=Commands(cli, impl.plugin_name))
            except PluginError as exc:
                self._load_errors.append(str(exc))
            except Exception as exc:  # a broken plugin must not break fsbench
                self._load_errors.append(f"plugin {impl.plugin_name!r} failed to add its commands: {exc}")


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


def set_registry(registry: Registry | None) -> None:
    """Replace (or with None, reset) the process-wide registry: for tests."""
    global _registry
    _registry = registry


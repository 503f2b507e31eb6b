"""The import graph keeps DESIGN.md's directions: `cli -> registry -> api <- plugins, generators`.

Every module under fsbench/, plugins/ and generators/ is parsed (never imported), and each
`import` statement becomes an edge: those at module level, those inside functions (run later,
but still a dependency), and those under ``if TYPE_CHECKING:`` (annotations only). The rules:

- no cycle among the imports that run (module level or in a function; TYPE_CHECKING ones do
  not run): a cycle that a function-level import hides today becomes an ImportError the day
  someone hoists it, and it means two modules are really one;
- the core (``fsbench.*``) never imports ``plugins`` or ``generators``, except the two
  applications built on top of everything (``fsbench.demo``, ``fsbench.leaderboard``: the
  demo trains FR models through the fr plugin's gap benchmark), which only the CLI imports;
- ``generators.X`` imports neither ``plugins`` nor another generator ``generators.Y``;
- a plugin package ``plugins.A`` imports neither another plugin package ``plugins.B`` nor
  ``generators`` (code that two plugins share is a contract: it belongs in the core);
- only ``fsbench.cli`` and ``fsbench.__main__`` import ``fsbench.cli`` (plugins get the click
  group through the command hook, never the CLI module).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fsbench", "plugins", "generators")
APPLICATIONS = ("fsbench.demo", "fsbench.leaderboard")  # compose plugins; nothing but the CLI imports them


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. "fsbench.plugins.fr.gap"
    target: str  # imported module, e.g. "fsbench.data.pairs"
    line: int
    module_level: bool  # runs when `source` is imported (not inside a function)
    type_checking: bool  # under `if TYPE_CHECKING:`; never runs

    def where(self) -> str:
        return f"{_file_of(self.source)}:{self.line}"


def _file_of(module: str) -> str:
    """fsbench.plugins.fr.gap -> plugins/fr/gap.py: the folders plugins/ and generators/ are
    installed as fsbench.plugins and fsbench.generators (pyproject's package-dir)."""
    parts = module.split(".")
    if parts[:2] in (["fsbench", "plugins"], ["fsbench", "generators"]):
        parts = parts[1:]
    return "/".join(parts) + ".py"


def _layer(module: str) -> list[str]:
    """The module's name as DESIGN.md's layers read it: fsbench.plugins.fr.gap -> [plugins, fr, gap]."""
    parts = module.split(".")
    return parts[1:] if parts[:2] in (["fsbench", "plugins"], ["fsbench", "generators"]) else parts


def _modules() -> dict[str, Path]:
    """Dotted module name (as installed: plugins/ is fsbench.plugins) -> file, for every .py file
    of the three folders."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if package != "fsbench":
                parts.insert(0, "fsbench")
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted `name` that is one of our modules (None: third party)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _edges_of(module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    is_package = path.name == "__init__.py"
    edges: list[Edge] = []

    def add(name: str, line: int, module_level: bool, type_checking: bool) -> None:
        target = _resolve(name, modules)
        if name.split(".")[0] in ("plugins", "generators"):  # the source folder as a top-level package
            target = name
        if target is not None and target != module:
            edges.append(Edge(module, target, line, module_level, type_checking))

    def visit(node: ast.AST, module_level: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, module_level, type_checking)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package that holds `module`
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:  # `from a import b`: b may be a module of a
                add(f"{prefix}.{alias.name}", node.lineno, module_level, type_checking)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, module_level, True)
            for child in node.orelse:
                visit(child, module_level, type_checking)
            return
        for child in ast.iter_child_nodes(node):
            inner = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner, type_checking)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), True, False)
    return edges


def import_edges() -> list[Edge]:
    modules = _modules()
    return [edge for module, path in modules.items() for edge in _edges_of(module, path, modules)]


def find_cycles(edges: list[Edge]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component of the graph (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # recursion depth <= number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for component in components:  # walk inside the component from its first module back to it
        members = set(component)
        start = component[0]
        path, seen = [start], {start}
        while True:
            nxt = sorted(w for w in graph[path[-1]] if w in members)
            if start in nxt:
                cycles.append([*path, start])
                break
            step = next((w for w in nxt if w not in seen), None)
            if step is None:  # dead end inside the component: back up (the component guarantees a way)
                path.pop()
                continue
            path.append(step)
            seen.add(step)
    return cycles


def _describe(cycle: list[str], edges: list[Edge]) -> str:
    lines = {(e.source, e.target): e for e in edges}
    hops = [f"{a} -> {b} ({lines[a, b].where()})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "; ".join(hops)


def _runtime(edges: list[Edge], module_level_only: bool = False) -> list[Edge]:
    return [e for e in edges if not e.type_checking and (e.module_level or not module_level_only)]


def violations(edges: list[Edge]) -> list[str]:
    """DESIGN.md's directions, checked on every import (TYPE_CHECKING ones included)."""
    out = []
    for e in edges:
        if e.target.split(".")[0] in ("plugins", "generators"):
            out.append(f"{e.where()}: imports {e.target}: the folder is installed as fsbench.{e.target} "
                       "(a top-level import loads a second copy of the module)")
            continue
        src, dst = _layer(e.source), _layer(e.target)
        if e.target in APPLICATIONS and e.source not in (*APPLICATIONS, "fsbench.cli", "fsbench.__main__"):
            out.append(f"{e.where()}: imports the application {e.target} (only the CLI runs it)")
        if src[0] == "fsbench" and dst[0] in ("plugins", "generators") and e.source not in APPLICATIONS:
            out.append(f"{e.where()}: the core imports {e.target} (plugins and generators come through the registry)")
        elif src[0] == "generators" and dst[0] == "plugins":
            out.append(f"{e.where()}: generator imports plugin module {e.target}")
        elif src[0] == "generators" and dst[0] == "generators" and dst[1:2] != src[1:2]:
            out.append(f"{e.where()}: generator imports another generator's module {e.target}")
        elif src[0] == "plugins" and dst[0] == "generators":
            out.append(f"{e.where()}: plugin imports generator module {e.target}")
        elif src[0] == "plugins" and dst[0] == "plugins" and dst[1:2] != src[1:2]:
            out.append(f"{e.where()}: plugin package plugins.{src[1]} imports another plugin package's {e.target} "
                       "(move what both need into fsbench)")
        if e.target == "fsbench.cli" and e.source not in ("fsbench.cli", "fsbench.__main__"):
            out.append(f"{e.where()}: imports fsbench.cli (commands get the click group through the hook)")
    return out


# --------------------------------------------------------------------------- tests


def test_the_graph_sees_the_packages():
    edges = import_edges()
    pairs = {(e.source, e.target) for e in edges}
    assert ("fsbench.registry", "fsbench.api") in pairs  # module level
    assert ("fsbench.cli", "fsbench.registry") in pairs  # inside functions
    assert any(e.type_checking for e in edges if e.source == "fsbench.hookspecs")
    assert len({e.source for e in edges}) > 40


def test_no_cycle_among_module_level_imports():
    edges = _runtime(import_edges(), module_level_only=True)
    cycles = find_cycles(edges)
    assert cycles == [], "import cycles at module level:\n" + "\n".join(_describe(c, edges) for c in cycles)


def test_no_cycle_among_imports_that_run():
    """Function-level imports included: a lazy import may hide a cycle, not excuse it."""
    edges = _runtime(import_edges())
    cycles = find_cycles(edges)
    assert cycles == [], "import cycles:\n" + "\n".join(_describe(c, edges) for c in cycles)


def test_imports_follow_the_design_directions():
    found = violations(import_edges())
    assert found == [], "imports against DESIGN.md's directions:\n" + "\n".join(found)


def test_the_checks_catch_what_they_claim():
    """The checker on a made-up graph: a cycle, a core -> plugin import, plugin -> plugin."""
    def edge(a: str, b: str, module_level: bool = True) -> Edge:
        return Edge(a, b, 1, module_level, False)

    made_up = [edge("fsbench.a", "fsbench.b"), edge("fsbench.b", "fsbench.c", False), edge("fsbench.c", "fsbench.a"),
               edge("fsbench.a", "fsbench.plugins.m.x"), edge("fsbench.plugins.fr.g", "fsbench.plugins.metrics.v"),
               edge("fsbench.plugins.fr.g", "fsbench.plugins.fr.h"), edge("fsbench.generators.a.x", "fsbench.generators.b.y"),
               edge("fsbench.generators.a.x", "fsbench.generators.a.y"), edge("fsbench.plugins.fr.c", "fsbench.cli")]
    assert find_cycles(_runtime(made_up)) == [["fsbench.a", "fsbench.b", "fsbench.c", "fsbench.a"]]
    assert find_cycles(_runtime(made_up, module_level_only=True)) == []
    made_up.append(edge("fsbench.plugins.fr.k", "plugins.metrics.v"))  # the old top-level name
    found = violations(made_up)
    assert len(found) == 5, found
    assert [f.split(":")[0] for f in found] == ["fsbench/a.py", "plugins/fr/g.py", "generators/a/x.py", "plugins/fr/c.py",
                                                "plugins/fr/k.py"]


def test_every_package_folder_is_installed_under_fsbench():
    """pyproject lists the packages by hand (package-dir maps plugins/ and generators/ under
    fsbench): a new sub-package left out of the list would be missing from a wheel."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {name for name, path in _modules().items() if path.name == "__init__.py"}
    assert listed == found, (sorted(found - listed), sorted(listed - found))
    assert config["package-dir"] == {"fsbench.plugins": "plugins", "fsbench.generators": "generators"}

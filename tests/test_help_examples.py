"""Help examples run as written: every command's --help shows examples, each example names a
command that exists with options that command has (values of the right type, required
options given, the names of generators, metrics and embedders registered), and the cheap
ones are run, in a temporary folder, as written (only huge sizes made small)."""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fsbench.cli import get_cli

ROOT = Path(__file__).resolve().parents[1]
HEADINGS = ("Example:", "Examples:", "Quick start:")


def walk(command: click.Command, path: tuple[str, ...] = ("fsbench",)) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), (*path, name))


def examples(command: click.Command) -> list[str]:
    """The lines under an Example(s): heading of the help text, continuation lines joined."""
    out: list[str] = []
    under: int | None = None  # the heading's indent while inside its block
    for raw in (command.help or "").splitlines():
        text = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if text in HEADINGS:
            under = indent
            continue
        if under is None:
            continue
        if text == "\b":  # click's "do not rewrap" marker
            continue
        if not text or indent <= under:  # a blank line, or text back at the heading's level, ends the block
            under = None
            continue
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1][:-1].rstrip() + " " + text
        else:
            out.append(text)
    return out


def all_examples() -> list[tuple[str, str]]:
    cli = get_cli()
    return [(" ".join(path), line) for path, command in walk(cli) for line in examples(command)]


def leaf_commands() -> list[tuple[str, click.Command]]:
    return [(" ".join(path), c) for path, c in walk(get_cli()) if not isinstance(c, click.Group)]


def fsbench_args(line: str) -> list[str] | None:
    """The arguments after `fsbench` (or `torchrun ... -m fsbench[.cli]`); None for another program."""
    tokens = shlex.split(line, comments=True)
    if tokens[0] == "fsbench":
        return tokens[1:]
    if tokens[0] == "torchrun":
        module = tokens.index("-m")
        assert tokens[module + 1] in ("fsbench", "fsbench.cli"), f"{line}: torchrun runs {tokens[module + 1]}"
        return tokens[module + 2:]
    return None


def _checking_copy(command: click.Command) -> click.Command:
    """`command` with parameters that check names, arity, types and required options, but run
    no callback and need no file to exist (the example's files are not there)."""
    command = copy.copy(command)
    params = []
    for param in command.params:
        param = copy.copy(param)
        param.callback = None
        param.envvar = None
        if isinstance(param.type, click.Path):
            param.type = click.Path()
        elif isinstance(param.type, click.File):
            param.type = click.STRING
        params.append(param)
    command.params = params
    command.callback = None
    return command


def resolve(args: list[str]) -> tuple[click.Command, list[str], str]:
    """The command an argument list names, the arguments left for it, and its path."""
    command: click.Command = get_cli()
    path = ["fsbench"]
    while isinstance(command, click.Group):
        if command.invoke_without_command and (not args or args[0].startswith("-")):
            break  # a group that runs itself (`fsbench plugins --json`)
        assert args, f"`{' '.join(path)}` is a group: the example names no sub-command"
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"`{' '.join(path)}` has no sub-command {args[0]!r}"
        command, args = sub, args[1:]
        path.append(sub.name or "")
    return command, args, " ".join(path)


def check_names(command: click.Command, params: dict, where: str) -> None:
    """Generator, metric and embedder names an example gives (--metrics, --embedder, --features,
    --generator, a GENERATOR argument) are registered."""
    from fsbench.registry import get_registry

    registry = get_registry()
    kinds = {"--metrics": "metric", "--embedder": "embedder", "--features": "embedder", "--generator": "generator",
             "generator": "generator"}
    for param in command.params:
        kind = next((kinds[o] for o in param.opts if o in kinds), None)
        value = params.get(param.name or "")
        if kind is None or not isinstance(value, str):
            continue
        known = set(registry.names(kind))
        for spec in value.split(",") if kind == "metric" else [value]:
            assert spec.split(":")[0] in known, f"{where}: no {kind} {spec!r}"


EXAMPLES = all_examples()


def test_every_command_shows_an_example():
    missing = [path for path, command in leaf_commands() if not examples(command)]
    assert not missing, f"commands whose --help has no Example(s): block: {missing}"
    assert examples(get_cli()), "fsbench --help shows no Quick start"


def check_example(where: str, line: str) -> None:
    """AssertionError unless `line` names an existing command with options it has."""
    args = fsbench_args(line)
    if args is None:  # another program: only `make TARGET`, whose target must exist
        tokens = shlex.split(line, comments=True)
        assert tokens[0] == "make", f"{where}: example runs {tokens[0]!r}, neither fsbench nor make"
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
        assert set(tokens[1:]) <= targets, f"{where}: `{line}`: no such make target"
        return
    command, rest, path = resolve(args)
    try:
        ctx = _checking_copy(command).make_context(path, list(rest))
    except click.ClickException as exc:
        raise AssertionError(f"{where}: `{line}` does not parse: {exc.format_message()}") from None
    check_names(command, ctx.params, f"{where}: `{line}`")


@pytest.mark.parametrize(("where", "line"), EXAMPLES, ids=[f"{w}: {line[:60]}" for w, line in EXAMPLES])
def test_example_parses(where, line):
    check_example(where, line)


@pytest.mark.parametrize(("line", "problem"), [
    ("fsbench data mkae procedural --out w", "has no sub-command 'mkae'"),
    ("fsbench data make procedural --out w --idz 5", "No such option"),
    ("fsbench data make procedural --out w --ids five", "not a valid integer"),
    ("fsbench data make procedural --ids 5", "Missing option '--out'"),
    ("fsbench data info a b", "unexpected extra argument"),
    ("fsbench fr train --data w --run r --preset huge", "huge"),
    ("fsbench evaluate --dataset w --metrics cst,sepp", "no metric 'sepp'"),
    ("fsbench verify --bench x.bin --embedder dlb:aligned", "no embedder 'dlb:aligned'"),
    ("fsbench sample vigfase --out s", "no generator 'vigfase'"),
    ("fsbench data", "names no sub-command"),
    ("make no-such-target", "no such make target"),
])
def test_the_check_refuses_wrong_examples(line, problem):
    with pytest.raises(AssertionError, match=re.escape(problem)):
        check_example("test", line)


def test_the_walk_sees_plugin_commands_and_examples():
    paths = {path for path, _ in leaf_commands()}
    assert {"fsbench data make procedural", "fsbench verify", "fsbench fr train", "fsbench segtex edit"} <= paths
    assert len(EXAMPLES) >= 30
    assert ("fsbench benchmark fr", next(line for w, line in EXAMPLES if w == "fsbench benchmark fr")) in EXAMPLES
    assert all("\\" not in line for _, line in EXAMPLES)  # continuation lines joined


# ----------------------------------------------------------------------------- running the cheap ones

SMALL = {"--ids": 6, "--per-id": 3, "--bench-pairs": 20, "--pairs": 60}  # a size above these is made this


def small(args: list[str]) -> list[str]:
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg in SMALL and out[i + 1].isdigit() and int(out[i + 1]) > SMALL[arg]:  # `verify --pairs FILE`: kept
            out[i + 1] = str(SMALL[arg])
    return out


def example(where: str, startswith: str) -> list[str]:
    """The arguments of the example of `where` that starts with `startswith` (which must exist)."""
    found = [line for w, line in EXAMPLES if w == where and line.startswith(startswith)]
    assert found, f"no example of `{where}` starts with {startswith!r}: the help changed, update this test"
    args = fsbench_args(found[0])
    assert args is not None
    return args


def run(args: list[str], shrink: bool = True) -> None:
    args = small(args) if shrink else list(args)
    result = CliRunner().invoke(get_cli(), args, catch_exceptions=False)
    assert result.exit_code == 0, f"`fsbench {' '.join(args)}` exited {result.exit_code}:\n{result.output}"


# In the order a reader would run them; each names the help it comes from and how it starts.
CHEAP = [
    ("fsbench data make procedural", "fsbench data make procedural --out world --ids 100"),
    ("fsbench data show", "fsbench data show world"),
    ("fsbench data info", "fsbench data info world"),
    ("fsbench data convert", "fsbench data convert world world.rec"),
    ("fsbench verify", "fsbench verify --bench world/benchmarks/lfw_like/lfw_like.bin"),
    ("fsbench plugins", "fsbench plugins --json"),
    ("fsbench plugins", "fsbench plugins show vigface"),
    ("fsbench plugins show", "fsbench plugins show iou"),
    ("fsbench judge info", "fsbench judge info"),
    ("fsbench stats", "fsbench stats world --out world-pixels.npz --features pixels:8"),
]


def test_cheap_examples_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for where, start in CHEAP:
        run(example(where, start))
    assert (tmp_path / "sheet.png").stat().st_size > 0 and (tmp_path / "world.rec").exists()
    assert len(list((tmp_path / "world" / "benchmarks").glob("*/*.bin"))) == 3


def test_quick_start_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = examples(get_cli())
    assert len(lines) == 2
    for line in lines:
        args = fsbench_args(line)
        assert args is not None
        run(args)


def test_pairs_examples_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(["data", "make", "procedural", "--out", "syn", "--ids", "20", "--per-id", "2", "--no-masks", "--seed", "1"],
        shrink=False)  # 2 identities a fold
    run(example("fsbench data pairs", "fsbench data pairs syn"))
    run(example("fsbench data pairs", "fsbench verify --pairs syn-pairs.csv"))

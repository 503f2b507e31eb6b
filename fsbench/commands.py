"""The small facade `fsbench_register_commands` hands plugins (pytest's `parser.addoption`, not
its internals): a plugin adds click commands at a place named by a path, and never walks or
changes fsbench's click tree, so the tree can change without breaking plugins.

    @fsbench.hookimpl
    def fsbench_register_commands(commands):
        commands.add(verify_cmd)                               # fsbench verify
        commands.add(make_world_cmd, under="data make")        # fsbench data make world
        commands.group("benchmark", "Benchmarks that train models on a dataset.")
        commands.add(benchmark_fr_cmd, under="benchmark")      # fsbench benchmark fr
"""

from __future__ import annotations

import click

from fsbench.errors import PluginError

__all__ = ["Commands"]


class Commands:
    def __init__(self, root: click.Group, plugin: str = "?") -> None:
        self._root = root
        self.plugin = plugin  # the plugin being asked, named in clashes

    def _find(self, path: str) -> click.Group:
        group = self._root
        for part in path.split():
            sub = group.commands.get(part)
            if not isinstance(sub, click.Group):
                raise PluginError(f"plugin {self.plugin!r}: no command group `fsbench {path}` to add to "
                                  f"(make it with commands.group({path!r}, ...))")
            group = sub
        return group

    def add(self, command: click.Command, under: str = "") -> None:
        """Add `command` at the top level or under a group path such as ``"data make"``."""
        group = self._find(under)
        name = command.name or ""
        if name in group.commands:
            where = " ".join(p for p in ("fsbench", under, name) if p)
            raise PluginError(f"plugin {self.plugin!r}: the command `{where}` exists already")
        group.add_command(command)

    def group(self, path: str, help: str = "") -> None:  # noqa: A002 - click's word
        """Make the (plain) group at `path` unless some plugin made it first; its parent must exist."""
        parent_path, _, name = path.rpartition(" ")
        parent = self._find(parent_path)
        existing = parent.commands.get(name)
        if existing is None:
            parent.add_command(click.Group(name, help=help))
        elif not isinstance(existing, click.Group):
            raise PluginError(f"plugin {self.plugin!r}: `fsbench {path}` is a command, not a group")

"""Command groups imported only when they run: `opmas findings list` loads the findings
module, not the SSH client, the API server and every other group (CLI start-up time)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import typer
import typer.core
import typer.main


@dataclass(frozen=True)
class LazyCommand:
    """Where a command or group lives (`module:attribute`, a Typer app or a function) and the
    one line `opmas --help` shows for it without importing it."""

    target: str
    summary: str

    def load(self, name: str) -> Any:
        module_name, _, attribute = self.target.partition(":")
        found = getattr(importlib.import_module(module_name), attribute)
        if isinstance(found, typer.Typer):  # a group, even of one command (`events list`)
            command: Any = typer.main.get_group(found)
        else:
            single = typer.Typer()
            single.command(name)(found)
            command = typer.main.get_command(single)
        command.name = name
        return command


class LazyGroup(typer.core.TyperGroup):
    """A TyperGroup whose `lazy` commands are imported on first use; `--help` lists them by
    their summary alone."""

    lazy: dict[str, LazyCommand] = {}  # noqa: RUF012 - set once per subclass, read only
    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        own = super().list_commands(ctx)
        return [*own, *(name for name in self.lazy if name not in own)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        spec = self.lazy[cmd_name]
        if self._listing:
            return typer.core.TyperCommand(cmd_name, help=spec.summary, short_help=spec.summary)
        command = spec.load(cmd_name)
        self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

"""A command group that imports a command's module only when that command is run or asked for its
help: `orderworker --help` imports no command module, `orderworker health` only health's."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
import typer.main
from typer._click import Command, Context, HelpFormatter
from typer.core import DEFAULT_MARKUP_MODE, TyperCommand, TyperGroup
from typer.models import CommandInfo


@dataclass(frozen=True, slots=True)
class LazyCommand:
    target: str  # "package.module:attribute": a command function or a Typer app (a group)
    help: str  # the line the group's --help shows for it, without importing the module


def load(name: str, entry: LazyCommand) -> Command:
    module_name, _, attribute = entry.target.partition(":")
    found = getattr(importlib.import_module(module_name), attribute)
    if isinstance(found, typer.Typer):
        group = typer.main.get_group(found)
        group.name = name
        return group
    info = CommandInfo(name=name, callback=found)
    return typer.main.get_command_from_info(
        info, pretty_exceptions_short=True, rich_markup_mode=DEFAULT_MARKUP_MODE
    )


class LazyCommands(MutableMapping[str, Command]):
    """The group's commands by name: every name known up front, each built on first lookup."""

    def __init__(self, table: Mapping[str, LazyCommand]) -> None:
        self.table = table
        self.loaded: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        if name not in self.loaded:
            if name not in self.table:
                raise KeyError(name)
            self.loaded[name] = load(name, self.table[name])
        return self.loaded[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self.loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self.table, *self.loaded]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*self.table, *self.loaded]))

    def __contains__(self, name: object) -> bool:
        return name in self.table or name in self.loaded


class LazyGroup(TyperGroup):
    """Subclass it with `table` set, and pass the subclass as the root Typer's `cls`."""

    table: ClassVar[Mapping[str, LazyCommand]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.table)

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.commands)  # names only: listing them imports nothing

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        # The command list is drawn from the table's help lines, not from the commands' modules.
        listing = copy.copy(self)
        listing.commands = {
            name: TyperCommand(name=name, short_help=entry.help)
            for name, entry in self.table.items()
        }
        TyperGroup.format_help(listing, ctx, formatter)

"""Help that reads like a usual CLI's: `--stage TEXT`, `promote NAME VERSION`, bare flags.

Typer 0.29 labels every parameter with its Python type (`--force <bool>`, `<list[str]>`) and
wraps required arguments in braces (`{name}`), with no setting to turn that off. The root
group gives every parameter of every command a subclass that only changes those labels, so
parsing is Typer's own.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# Click's names for the types our options take; anything else is shown upper-cased.
TYPE_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "int range": "INTEGER RANGE",
    "float range": "FLOAT RANGE",
}


def _type_name(param: TyperOption | TyperArgument, ctx: Any) -> str:
    label = param.display_type(ctx).strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[len("list[") : -1]
    return TYPE_NAMES.get(label, label.upper())


class PlainOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        return _type_name(self, ctx)


class PlainArgument(TyperArgument):
    @property
    def display_name_raw(self) -> str:
        return self.metavar or (self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        # The argument's name already stands for its value.
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return f"{name}..." if self.nargs != 1 else name


def _plain(params: list[Any]) -> list[Any]:
    for param in params:
        # Exact types only: a parameter already given another class keeps it.
        if type(param) is TyperOption:
            param.__class__ = PlainOption
        elif type(param) is TyperArgument:
            param.__class__ = PlainArgument
    return params


class PlainHelpCommand(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))


class PlainHelpGroup(TyperGroup):
    """The root group: its own parameters and every command it resolves get plain labels."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if type(command) is TyperCommand:
            command.__class__ = PlainHelpCommand
        return command

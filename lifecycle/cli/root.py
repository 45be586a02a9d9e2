"""The root command group: each layer's verbs are loaded only when a command needs them.

Importing the layers imports MLflow, which takes seconds; `lifecycle up` must refuse a taken
port at once, and `up` and `tracking` need no layer to start. Any other command, and
`--help`, loads them all (Click's lazy-group pattern).
"""

from __future__ import annotations

import importlib
from typing import Any

import typer

from lifecycle.cli.help import PlainHelpGroup


class LazyLayersGroup(PlainHelpGroup):
    #: Modules whose `app` (a Typer) holds a layer's verbs, in help order.
    layers: tuple[str, ...] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._layers_loaded = False

    def _load_layers(self) -> None:
        if self._layers_loaded:
            return
        self._layers_loaded = True
        for module in self.layers:
            layer = typer.main.get_command(importlib.import_module(module).app)
            self.commands.update(getattr(layer, "commands", {layer.name: layer}))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            self._load_layers()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: Any) -> list[str]:
        self._load_layers()
        return list(super().list_commands(ctx))

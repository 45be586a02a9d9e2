"""What every layer's CLI verbs share: option types, MLproject booleans, output.

Each top-level folder owns its verbs in its own `cli.py` (a Typer app); the root command in
`lifecycle.cli.main` merges them. Settings are read once per command, at its entry, and
passed down.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lifecycle.core.errors import ConfigError
from lifecycle.core.settings import Settings

DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset", "-d", help="Dataset name from conf/datasets.yaml, or a CSV/Parquet path."
    ),
]
EstimatorOpt = Annotated[
    str | None, typer.Option("--estimator", "-e", help="Estimator from conf/training.yaml.")
]
TargetOpt = Annotated[str | None, typer.Option("--target", help="Target column (file datasets).")]
ClassLabelsOpt = Annotated[
    str | None,
    typer.Option(
        "--class-labels",
        help='File datasets: each class value\'s label as JSON, e.g. \'{"0": "setosa"}\' '
        "(the model answers with the label).",
    ),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Estimator parameter KEY=VALUE (repeatable)."),
]
ModelNameOpt = Annotated[str | None, typer.Option("--model-name", help="Registered model name.")]
StageOpt = Annotated[
    str, typer.Option("--stage", "-s", help="Production, Staging, Archived or None.")
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why; recorded in the audit tags.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Skip the metric gates (never signature or loading).")
]
# MLproject parameters are strings: entry points pass "true"/"false" through these options.
ForceValueOpt = Annotated[str | None, typer.Option("--force-value", hidden=True)]


def truthy(value: str | None, default: bool, field: str) -> bool:
    """An MLproject boolean parameter ("true"/"false"), or the flag's value when not given."""
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{field}: expected true or false, got '{value}'")


def load_settings() -> Settings:
    return Settings()


def echo(message: str) -> None:
    typer.echo(message)

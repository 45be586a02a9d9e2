"""The `lifecycle` command: every layer's verbs in one CLI, plus `tracking`, `up` and `airflow`.

Each top-level folder owns its verbs (`training/cli.py`, `registry/cli.py`, `serving/cli.py`,
`reports/cli.py`, `ui/cli.py`); this root merges them (loaded on first use, see
`lifecycle.cli.root`) and adds the two verbs that compose the layers. Settings are read by
each command at its entry, once, and passed down.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from lifecycle.cli.root import LazyLayersGroup
from lifecycle.core.errors import LifecycleError
from lifecycle.core.options import echo, load_settings


class LifecycleGroup(LazyLayersGroup):
    layers = ("training.cli", "registry.cli", "serving.cli", "reports.cli", "ui.cli")


app = typer.Typer(
    cls=LifecycleGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Lifecycle: train, gate, promote and serve MLflow models.",
)


@app.command()
def tracking() -> None:
    """Run the MLflow tracking server for the configured backend (SQLite by default)."""
    from lifecycle.cli.tracking import server_command

    cmd = server_command(load_settings())
    # MLflow's job runner serves features Lifecycle does not use, and stopping it adds
    # seconds to every shutdown; a user who wants it sets the variable.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(cmd[0], cmd)


@app.command()
def up(
    no_airflow: Annotated[
        bool, typer.Option("--no-airflow", help="Do not start Airflow (the pipelines' scheduler).")
    ] = False,
) -> None:
    """Run the embedded stack in the foreground until Ctrl-C."""
    from lifecycle.cli.up import up as run_up

    raise typer.Exit(run_up(load_settings(), echo, airflow=not no_airflow))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def airflow(ctx: typer.Context) -> None:
    """Run an `airflow` command on the embedded Airflow: `lifecycle airflow dags list`.

    Airflow's virtualenv, home, database and DAGs as `up` runs them; its help is `-h`."""
    from lifecycle.cli.airflow import EmbeddedAirflow
    from lifecycle.cli.up import child_env

    settings = load_settings()
    embedded = EmbeddedAirflow(settings, child_env(settings))
    os.execve(embedded.command, [embedded.command, *ctx.args], embedded.env)


@app.command()
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Age beyond which predictions go: 30d, 12h, 90m, 45s, 2w.",
        ),
    ],
) -> None:
    """Remove older predictions (and their feedback) from the prediction log.

    PostgreSQL drops whole day partitions older than the cutoff; SQLite deletes rows."""
    from lifecycle.cli.prune import run_prune

    run_prune(load_settings(), older_than, echo)


def main() -> None:
    # Typer reports usage errors itself; expected domain failures become one line, exit 2.
    try:
        app()
    except LifecycleError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    except Exception as exc:
        # MLflow is imported only by the commands that use it: if it never was, it did not raise.
        mlflow_errors = sys.modules.get("mlflow.exceptions")
        if mlflow_errors is None or not isinstance(exc, mlflow_errors.MlflowException):
            raise
        typer.echo(f"error: MLflow: {exc.message.splitlines()[0]}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

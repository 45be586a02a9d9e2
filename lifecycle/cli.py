"""The `lifecycle` command. Settings are read here, once, and passed down."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from mlflow.exceptions import MlflowException

from lifecycle.errors import ConfigError, LifecycleError
from lifecycle.settings import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Lifecycle: train, gate, promote and serve MLflow models.",
)

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
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Estimator parameter KEY=VALUE (repeatable)."),
]
RegisterOpt = Annotated[
    bool, typer.Option("--register/--no-register", help="Register the model in the registry.")
]
# MLproject parameters are strings: entry points pass "true"/"false" through this option.
RegisterValueOpt = Annotated[str | None, typer.Option("--register-value", hidden=True)]
ModelNameOpt = Annotated[str | None, typer.Option("--model-name", help="Registered model name.")]


def _truthy(value: str | None, default: bool, field: str = "register") -> bool:
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{field}: expected true or false, got '{value}'")


def _settings() -> Settings:
    return Settings()


def _echo(message: str) -> None:
    typer.echo(message)


@app.command()
def tracking() -> None:
    """Run the MLflow tracking server for the configured backend (SQLite by default)."""
    settings = _settings()
    from lifecycle.tracking import server_command

    cmd = server_command(settings)
    os.execv(cmd[0], cmd)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind host (default: api_host).")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port (default: api_port).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="uvicorn worker processes (default: api_workers).")
    ] = None,
) -> None:
    """Serve the registry's current model over REST, following its transitions."""
    from serving.server import run

    settings = _settings()
    run(
        settings,
        host or settings.api_host,
        port or settings.api_port,
        workers or settings.api_workers,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Tasks run at once (default: worker_concurrency).")
    ] = None,
    pool: Annotated[
        str, typer.Option(help="Celery pool: threads (one model per worker), solo or prefork.")
    ] = "threads",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Score async requests and batch files from the broker (and the plain-AMQP queue)."""
    from serving.worker import POOLS, run_worker

    if pool not in POOLS:
        raise typer.BadParameter(f"--pool: expected one of {', '.join(POOLS)}, got '{pool}'")
    settings = _settings()
    run_worker(settings, concurrency or settings.worker_concurrency, pool, loglevel)


@app.command()
def up() -> None:
    """Run the embedded stack in the foreground until Ctrl-C."""
    from lifecycle.up import up as run_up

    raise typer.Exit(run_up(_settings(), _echo))


@app.command()
def train(
    dataset: DatasetOpt = None,
    estimator: EstimatorOpt = None,
    target: TargetOpt = None,
    param: ParamOpt = None,
    register: RegisterOpt = False,
    model_name: ModelNameOpt = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    register_value: RegisterValueOpt = None,
) -> None:
    """Fit the configured pipeline and log it to MLflow."""
    from training.metrics import metrics_line
    from training.train import TrainRequest, parse_params
    from training.train import train as run_train

    settings = _settings()
    result = run_train(
        settings,
        TrainRequest(
            dataset=dataset or settings.dataset,
            estimator=estimator,
            params=parse_params(param or []),
            target=target or None,
            register=_truthy(register_value, register),
            model_name=model_name or None,
            run_name=run_name or None,
        ),
    )
    _echo(f"run {result.run_id}  {metrics_line(result.metrics)}")
    if result.version:
        _echo(f"registered {result.registered_name} version {result.version}")


@app.command()
def tune(
    dataset: DatasetOpt = None,
    estimator: EstimatorOpt = None,
    target: TargetOpt = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="Trials to run in this call.")] = 20,
    study: Annotated[
        str | None, typer.Option("--study", help="Study name; the same name resumes it.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    register: RegisterOpt = False,
    model_name: ModelNameOpt = None,
    register_value: RegisterValueOpt = None,
) -> None:
    """Search the configured space with Optuna; each trial is a nested MLflow run."""
    from training.metrics import metrics_line
    from training.tune import TuneRequest
    from training.tune import tune as run_tune

    settings = _settings()
    result = run_tune(
        settings,
        TuneRequest(
            dataset=dataset or settings.dataset,
            trials=trials,
            estimator=estimator,
            study_name=study or None,
            target=target or None,
            register=_truthy(register_value, register),
            model_name=model_name or None,
            timeout=timeout,
        ),
    )
    _echo(
        f"study {result.study_name}: {result.n_trials} trials, best {result.best_value:.4f} "
        f"with {result.best_params}"
    )
    _echo(f"run {result.run_id}  {metrics_line(result.metrics)}")
    if result.version:
        _echo(f"registered {result.registered_name} version {result.version}")


@app.command()
def evaluate(
    model: Annotated[str | None, typer.Option("--model", help="Registered model name.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Model version.")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Score this run's model.")] = None,
    data_run_id: Annotated[
        str | None, typer.Option(help="Use this run's held-out data instead of the model's own.")
    ] = None,
) -> None:
    """Score a registered version (or a run's model) on held-out data and log the metrics."""
    from training.evaluate import EvaluateRequest
    from training.evaluate import evaluate as run_evaluate
    from training.metrics import metrics_line

    result = run_evaluate(
        _settings(),
        EvaluateRequest(
            model_name=model or None,
            version=version or None,
            run_id=run_id or None,
            data_run_id=data_run_id or None,
        ),
    )
    _echo(f"{result.model_uri}: {metrics_line(result.metrics)} (run {result.run_id})")


StageOpt = Annotated[
    str, typer.Option("--stage", "-s", help="Production, Staging, Archived or None.")
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why; recorded in the audit tags.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Skip the metric gates (never signature or loading).")
]
# MLproject parameters are strings: entry points pass "true"/"false" through this option.
ForceValueOpt = Annotated[str | None, typer.Option("--force-value", hidden=True)]


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Model version.")],
    stage: StageOpt = "Production",
    reason: ReasonOpt = None,
    force: ForceOpt = False,
    force_value: ForceValueOpt = None,
) -> None:
    """Gate a version and move it to a stage; the stage's alias and audit tags follow."""
    from registry.commands import promote_command

    forced = _truthy(force_value, force, "force")
    promote_command(_settings(), name, version, stage, reason, forced, _echo)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: ReasonOpt = None,
) -> None:
    """Return Production (and its alias) to the version the current one replaced."""
    from registry.commands import rollback_command

    rollback_command(_settings(), name, reason, _echo)


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(help="Registered model; default: all.")] = None,
) -> None:
    """List registered versions with stage, aliases, scores and promotion times."""
    from registry.commands import models_command

    models_command(_settings(), name, _echo)


@app.command("main")
def main_pipeline(
    dataset: DatasetOpt = None,
    estimator: EstimatorOpt = None,
    target: TargetOpt = None,
    param: ParamOpt = None,
    model_name: ModelNameOpt = None,
    stage: StageOpt = "Staging",
    reason: ReasonOpt = None,
    force: ForceOpt = False,
    force_value: ForceValueOpt = None,
) -> None:
    """Train, register and promote through the gates (Staging unless --stage says otherwise)."""
    from registry.commands import main_command
    from training.train import TrainRequest, parse_params

    settings = _settings()
    request = TrainRequest(
        dataset=dataset or settings.dataset,
        estimator=estimator or None,
        params=parse_params(param or []),
        target=target or None,
        register=True,
        model_name=model_name or None,
    )
    forced = _truthy(force_value, force, "force")
    main_command(settings, request, stage, reason, forced, _echo)


def main() -> None:
    # Typer reports usage errors itself; expected domain failures become one line, exit 2.
    try:
        app()
    except LifecycleError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    except MlflowException as exc:
        typer.echo(f"error: MLflow: {exc.message.splitlines()[0]}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

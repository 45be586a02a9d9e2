"""Training's verbs: `lifecycle train`, `tune` and `evaluate` (the MLproject entry points)."""

from __future__ import annotations

from typing import Annotated

import typer

from lifecycle.core.options import (
    ClassLabelsOpt,
    DatasetOpt,
    EstimatorOpt,
    ModelNameOpt,
    ParamOpt,
    TargetOpt,
    echo,
    load_settings,
    truthy,
)

app = typer.Typer()

RegisterOpt = Annotated[
    bool, typer.Option("--register/--no-register", help="Register the model in the registry.")
]
# MLproject parameters are strings: entry points pass "true"/"false" through this option.
RegisterValueOpt = Annotated[str | None, typer.Option("--register-value", hidden=True)]


@app.command()
def train(
    dataset: DatasetOpt = None,
    estimator: EstimatorOpt = None,
    target: TargetOpt = None,
    class_labels: ClassLabelsOpt = None,
    param: ParamOpt = None,
    register: RegisterOpt = False,
    model_name: ModelNameOpt = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    register_value: RegisterValueOpt = None,
) -> None:
    """Fit the configured pipeline and log it to MLflow."""
    from training.metrics import metrics_line
    from training.train import TrainRequest, parse_class_labels, parse_params
    from training.train import train as run_train

    settings = load_settings()
    result = run_train(
        settings,
        TrainRequest(
            dataset=dataset or settings.dataset,
            estimator=estimator,
            params=parse_params(param or []),
            target=target or None,
            class_labels=parse_class_labels(class_labels),
            register=truthy(register_value, register, "register"),
            model_name=model_name or None,
            run_name=run_name or None,
        ),
    )
    echo(f"run {result.run_id}  {metrics_line(result.metrics)}")
    if result.version:
        echo(f"registered {result.registered_name} version {result.version}")


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
    from training.progress import trial_progress
    from training.tune import TuneRequest
    from training.tune import tune as run_tune

    settings = load_settings()
    request = TuneRequest(
        dataset=dataset or settings.dataset,
        trials=trials,
        estimator=estimator,
        study_name=study or None,
        target=target or None,
        register=truthy(register_value, register, "register"),
        model_name=model_name or None,
        timeout=timeout,
    )
    with trial_progress(trials) as on_trial:
        result = run_tune(settings, request, on_trial)
    echo(
        f"study {result.study_name}: {result.n_trials} trials, best {result.best_value:.4f} "
        f"with {result.best_params}"
    )
    echo(f"run {result.run_id}  {metrics_line(result.metrics)}")
    if result.version:
        echo(f"registered {result.registered_name} version {result.version}")


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
        load_settings(),
        EvaluateRequest(
            model_name=model or None,
            version=version or None,
            run_id=run_id or None,
            data_run_id=data_run_id or None,
        ),
    )
    echo(f"{result.model_uri}: {metrics_line(result.metrics)} (run {result.run_id})")

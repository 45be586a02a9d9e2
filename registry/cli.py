"""The registry's verbs: `lifecycle promote`, `rollback`, `models` and `main`."""

from __future__ import annotations

from typing import Annotated

import typer

from lifecycle.core.options import (
    ClassLabelsOpt,
    DatasetOpt,
    EstimatorOpt,
    ForceOpt,
    ForceValueOpt,
    ModelNameOpt,
    ParamOpt,
    ReasonOpt,
    StageOpt,
    TargetOpt,
    echo,
    load_settings,
    truthy,
)

app = typer.Typer()


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

    forced = truthy(force_value, force, "force")
    promote_command(load_settings(), name, version, stage, reason, forced, echo)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: ReasonOpt = None,
) -> None:
    """Return Production (and its alias) to the version the current one replaced."""
    from registry.commands import rollback_command

    rollback_command(load_settings(), name, reason, echo)


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(help="Registered model; default: all.")] = None,
) -> None:
    """List registered versions with stage, aliases, scores and promotion times."""
    from registry.commands import models_command

    models_command(load_settings(), name, echo)


@app.command("main")
def main_pipeline(
    dataset: DatasetOpt = None,
    estimator: EstimatorOpt = None,
    target: TargetOpt = None,
    class_labels: ClassLabelsOpt = None,
    param: ParamOpt = None,
    model_name: ModelNameOpt = None,
    stage: StageOpt = "Staging",
    reason: ReasonOpt = None,
    force: ForceOpt = False,
    force_value: ForceValueOpt = None,
) -> None:
    """Train, register and promote through the gates (Staging unless --stage says otherwise)."""
    from registry.commands import main_command
    from training.train import TrainRequest, parse_class_labels, parse_params

    settings = load_settings()
    request = TrainRequest(
        dataset=dataset or settings.dataset,
        estimator=estimator or None,
        params=parse_params(param or []),
        target=target or None,
        class_labels=parse_class_labels(class_labels),
        register=True,
        model_name=model_name or None,
    )
    forced = truthy(force_value, force, "force")
    main_command(settings, request, stage, reason, forced, echo)

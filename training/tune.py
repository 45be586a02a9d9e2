"""`tune`: an Optuna study over the configured search space, each trial a nested MLflow run.

The study lives in the application database (`LIFECYCLE_DATABASE_URL`: PostgreSQL in
production, SQLite in the embedded mode), so calling `tune` again with the same study name
resumes it. It cannot share MLflow's own schema: both keep an `alembic_version` table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import optuna
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold

from lifecycle.core import mlflow_gateway
from lifecycle.core.config import ParamSpace
from lifecycle.core.errors import ConfigError
from lifecycle.core.settings import Settings
from training import record
from training.pipeline import build_pipeline
from training.train import Prepared, log_common, prepare


@dataclass(frozen=True)
class TuneRequest:
    dataset: str
    trials: int = 20
    estimator: str | None = None
    study_name: str | None = None
    target: str | None = None
    register: bool = False
    model_name: str | None = None
    timeout: float | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TuneResult:
    run_id: str
    study_name: str
    best_params: dict[str, Any]
    best_value: float
    n_trials: int
    metrics: dict[str, float]
    registered_name: str | None
    version: str | None


@dataclass(frozen=True)
class TrialDone:
    """What a progress display needs after each trial of this call."""

    number: int
    done: int
    total: int
    state: str
    value: float | None
    best_number: int | None
    best_value: float | None


OnTrial = Callable[[TrialDone], None]


def suggest(trial: optuna.Trial, space: dict[str, ParamSpace]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.type == "categorical":
            if not spec.choices:
                raise ConfigError(f"search space {name}: categorical needs choices")
            params[name] = trial.suggest_categorical(name, spec.choices)
            continue
        if spec.low is None or spec.high is None:
            raise ConfigError(f"search space {name}: {spec.type} needs low and high")
        if spec.type == "int":
            params[name] = trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        else:
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    return params


def study_storage(settings: Settings) -> str:
    url = settings.resolved_database_url()
    if url.startswith("sqlite:///"):
        settings.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    return url


def tune(settings: Settings, request: TuneRequest, on_trial: OnTrial | None = None) -> TuneResult:
    if request.trials < 1:
        raise ConfigError(f"trials must be at least 1, got {request.trials}")
    prep = prepare(settings, request.dataset, request.estimator, request.target)
    est_cfg = prep.config.estimators[prep.estimator]
    if not est_cfg.search_space:
        raise ConfigError(f"estimator {prep.estimator} has no search_space in training.yaml")
    tuning = prep.config.tuning
    study_name = request.study_name or f"{prep.data.name}-{prep.estimator}"
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=tuning.n_startup_trials, n_warmup_steps=1)
        if tuning.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    mlflow_gateway.connect(settings)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=study_storage(settings),
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        pruner=pruner,
    )
    base = {**est_cfg.params, **request.params}
    name = (
        (request.model_name or settings.registered_model_name(request.dataset))
        if (request.register)
        else None
    )
    with _quiet_run_urls(), mlflow_gateway.start_run(settings, f"tune-{study_name}") as parent:
        log_common(prep, settings)
        mlflow.set_tags({"lifecycle.study": study_name, "lifecycle.kind": "tune"})
        objective = _objective(prep, settings, base, est_cfg.search_space)
        study.optimize(
            objective,
            n_trials=request.trials,
            timeout=request.timeout,
            callbacks=[_reporter(request.trials, on_trial)] if on_trial else None,
        )
        best = study.best_trial
        best_params = {**base, **best.params}
        mlflow.log_params({f"best.{k}": v for k, v in best_params.items()})
        mlflow.log_metric(f"best_cv_{tuning.metric}", float(best.value or 0.0))
        mlflow.log_metric("n_trials_total", len(study.trials))
        pipeline = build_pipeline(prep.data.schema, prep.estimator, best_params, settings.seed)
        train = prep.split.train
        pipeline.fit(prep.data.schema.coerce(train), train[prep.data.schema.target])
        scores = record.log_evaluation(pipeline, prep.data.schema, prep.split.test)
        record.log_data(prep.data, prep.split)
        info = record.log_model(pipeline, prep.data.schema, train, name)
    version = info.registered_model_version
    return TuneResult(
        parent.info.run_id,
        study_name,
        best_params,
        float(best.value or 0.0),
        len(study.trials),
        scores,
        name,
        str(version) if version is not None else None,
    )


@contextmanager
def _quiet_run_urls() -> Iterator[None]:
    """Without MLflow's two "View run"/"View experiment" lines per run: a study of 20 trials
    printed 40 of them, burying the progress and the result (the CLI prints the run id)."""
    name = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    previous = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _reporter(total: int, on_trial: OnTrial) -> Callable[[optuna.Study, Any], None]:
    done = 0

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal done
        done += 1
        try:
            best: optuna.trial.FrozenTrial | None = study.best_trial
        except ValueError:  # no trial completed yet (all pruned so far)
            best = None
        on_trial(
            TrialDone(
                number=trial.number,
                done=done,
                total=total,
                state=trial.state.name,
                value=trial.value,
                best_number=best.number if best else None,
                best_value=best.value if best else None,
            )
        )

    return callback


def _objective(
    prep: Prepared, settings: Settings, base: dict[str, Any], space: dict[str, ParamSpace]
) -> Any:
    tuning = prep.config.tuning
    schema = prep.data.schema
    X = schema.coerce(prep.split.train)
    y = prep.split.train[schema.target]
    folds = StratifiedKFold(
        n_splits=min(tuning.cv_folds, int(y.value_counts().min()))
        if y.value_counts().min() >= 2
        else 2,
        shuffle=True,
        random_state=settings.seed,
    )
    try:
        scorer = get_scorer(tuning.metric)
    except ValueError as exc:
        raise ConfigError(f"tuning.metric: unknown scorer '{tuning.metric}'") from exc

    def objective(trial: optuna.Trial) -> float:
        params = {**base, **suggest(trial, space)}
        pruned = False
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(params)
            mlflow.set_tag("optuna.trial", trial.number)
            scores: list[float] = []
            for step, (fit_idx, val_idx) in enumerate(folds.split(X, y)):
                pipeline = build_pipeline(schema, prep.estimator, params, settings.seed)
                pipeline.fit(X.iloc[fit_idx], y.iloc[fit_idx])
                scores.append(float(scorer(pipeline, X.iloc[val_idx], y.iloc[val_idx])))
                running = float(np.mean(scores))
                trial.report(running, step)
                mlflow.log_metric(f"cv_{tuning.metric}", running, step=step)
                if trial.should_prune():
                    pruned = True
                    break
            mlflow.set_tag("optuna.state", "PRUNED" if pruned else "COMPLETE")
        if pruned:
            raise optuna.TrialPruned()
        return float(np.mean(scores))

    return objective

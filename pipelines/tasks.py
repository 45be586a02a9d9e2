"""The functions the DAGs' tasks call in the project's virtualenv (`@task.external_python`).

Each is an entry point: it reads the settings (environment) and conf/pipelines.yaml once,
prints its progress (the task's log), returns a JSON-able dict (the task's XCom), and fails the
task by raising with a one-line message. The work is in the modules it calls.
"""

from __future__ import annotations

from typing import Any

from lifecycle.core.config import PipelinesConfig, load_pipelines
from lifecycle.core.options import load_settings
from lifecycle.core.settings import Settings
from pipelines import batch, drift, promotion, serving_watch, training_set
from pipelines.promotion import AutomaticPromotionRefused

__all__ = [
    "AutomaticPromotionRefused",
    "build_training_set",
    "claim_files",
    "context",
    "drift_check",
    "first_prediction",
    "score_file",
    "train_and_promote",
    "wait_until_served",
]


def _load() -> tuple[Settings, PipelinesConfig]:
    settings = load_settings()
    return settings, load_pipelines(settings.conf_dir)


def context() -> dict[str, Any]:
    """What the DAGs need to know of the deployment (names, URLs, folders)."""
    settings, config = _load()
    return {
        "model_name": settings.registered_model_name(),
        "api_url": settings.resolved_api_url(),
        "tracking_uri": settings.resolved_tracking_uri(),
        "experiment_name": settings.experiment_name,
        "monitoring_experiment": settings.monitoring_experiment,
        "pipelines_experiment": config.experiment,
        "retrain_stage": config.retrain.stage,
        "pipeline_dir": str(settings.resolved_pipeline_dir()),
    }


def claim_files() -> list[str]:
    return batch.claim_files(load_settings().resolved_pipeline_dir())


def score_file(path: str) -> dict[str, Any]:
    settings, config = _load()
    return batch.score_file(settings.resolved_api_url(), config.batch, path)


def drift_check() -> dict[str, Any]:
    settings, config = _load()
    return drift.drift_check(settings, config.retrain)


def build_training_set(report_id: str | None, dag_run_id: str) -> dict[str, Any]:
    return training_set.build_training_set(load_settings(), report_id, dag_run_id)


def train_and_promote(
    training_set: dict[str, Any], report_id: str | None, dag_run_id: str
) -> dict[str, Any]:
    settings, config = _load()
    return promotion.train_and_promote(
        settings, config.retrain, training_set, report_id, dag_run_id
    )


def wait_until_served(model_name: str, version: str, stage: str) -> dict[str, Any]:
    settings, config = _load()
    return serving_watch.wait_until_served(settings, config.retrain, model_name, version, stage)


def first_prediction(model_name: str, version: str) -> dict[str, Any]:
    settings, config = _load()
    return serving_watch.first_prediction(settings, config.retrain, model_name, version)

"""The one place that talks to the MLflow tracking server and model registry.

`connect` checks the server answers before anything is attempted, so an unreachable server
is one clear error instead of minutes of retries and a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lifecycle.core.errors import NotFound, TrackingUnavailable
from lifecycle.core.settings import Settings


def check_reachable(uri: str, timeout: float) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise TrackingUnavailable(
            f"MLflow tracking server unreachable at {uri} ({type(exc).__name__})"
        ) from exc
    if response.status_code != 200:
        raise TrackingUnavailable(
            f"MLflow tracking server at {uri} is not healthy (HTTP {response.status_code})"
        )


def connect(settings: Settings) -> MlflowClient:
    uri = settings.resolved_tracking_uri()
    check_reachable(uri, settings.tracking_timeout)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def start_run(
    settings: Settings, run_name: str | None = None, nested: bool = False
) -> Iterator[mlflow.ActiveRun]:
    """A run in the configured experiment, or the run `mlflow run` created for us.

    Only MLFLOW_RUN_ID says a caller chose: `mlflow.set_experiment` itself exports
    MLFLOW_EXPERIMENT_ID, so that variable cannot tell a caller's choice from our own.
    `mlflow run` with no --experiment-name creates its run in the configured experiment too:
    see lifecycle.core.mlflow_experiment.
    """
    if not nested and not os.environ.get("MLFLOW_RUN_ID") and not mlflow.active_run():
        mlflow.set_experiment(settings.experiment_name)
    with mlflow.start_run(run_name=run_name, nested=nested) as run:
        yield run


def get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise NotFound(f"run {run_id} not found") from exc


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _registered_model_exists(client, name):
            raise NotFound(f"model {name} has no version {version}") from exc
        raise NotFound(f"registered model {name} not found") from exc


def search_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    if not _registered_model_exists(client, name):
        raise NotFound(f"registered model {name} not found")
    versions = client.search_model_versions(f"name = '{_quote(name)}'")
    return sorted(versions, key=lambda v: int(v.version))


def versions_in_stage(client: MlflowClient, name: str, stage: str) -> list[ModelVersion]:
    return [v for v in search_versions(client, name) if v.current_stage == stage]


def _registered_model_exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def model_metadata(model_uri: str) -> dict[str, Any]:
    info = mlflow.models.get_model_info(model_uri)
    return dict(info.metadata or {})

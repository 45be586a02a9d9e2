"""What Lifecycle's DAGs share (Airflow's virtualenv; never imports Lifecycle).

Two boundaries, each crossed one way only:
- Lifecycle's own code (scoring files, reports, training) runs in the project's virtualenv,
  whose interpreter the DAG runs find in LIFECYCLE_PROJECT_PYTHON: `@task.external_python`
  bodies import `pipelines.tasks` there, never here.
- MLflow's REST API is called through airflow-provider-mlflow's MLflowClientHook and its
  connection (AIRFLOW_CONN_MLFLOW_DEFAULT), so the tracking server's address and credentials
  live in one Airflow connection.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from mlflow_provider.hooks.client import MLflowClientHook

MLFLOW_CONN_ID = "mlflow_default"
START = datetime(2026, 1, 1)
# Rendered when a task runs, not when the file is parsed: the DAG processor needs no project
# interpreter, and a wrong one fails the task with the path in its log.
PROJECT_PYTHON = "{{ project_python() }}"
MACROS = {"project_python": lambda: project_python()}
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "lifecycle",
    "retries": 0,
    # The hook's requests carry no timeout of their own: this bounds every task.
    "execution_timeout": timedelta(minutes=30),
}
# What every Lifecycle DAG shares: one run at a time, no backfill of missed slots.
DAG_ARGS: dict[str, Any] = {
    "start_date": START,
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
    "user_defined_macros": MACROS,
    "tags": ["lifecycle"],
}
# Lineage tags: drift report → retrain run → model version → first prediction served.
TAG_REPORT_ID = "lifecycle.drift_report_id"
TAG_RETRAIN_RUN = "lifecycle.retrain_run_id"
TAG_RETRAINED_VERSION = "lifecycle.retrained_version"
TAG_DAG_RUN = "lifecycle.airflow_dag_run_id"
TAG_FIRST_REQUEST = "lifecycle.first_request_id"
REPORT_ID_TAG = "lifecycle.report.id"  # set by Lifecycle on every report's run


def project_python() -> str:
    python = os.environ.get("LIFECYCLE_PROJECT_PYTHON")
    if not python:
        raise RuntimeError(
            "LIFECYCLE_PROJECT_PYTHON is not set: Airflow must be started by `lifecycle up` "
            "(or given the project virtualenv's python, as compose.yaml does)"
        )
    return python


class MlflowError(RuntimeError):
    """MLflow's REST API answered with an error."""


def mlflow_api(method: str, endpoint: str, params: dict[str, Any] | None = None) -> Any:
    """One call to MLflow's REST API (`endpoint` below api/2.0/mlflow/) through the provider's
    hook; the decoded JSON answer, or MlflowError with MLflow's own message."""
    hook = MLflowClientHook(method=method, mlflow_conn_id=MLFLOW_CONN_ID)
    response = hook.run(endpoint=f"api/2.0/mlflow/{endpoint}", request_params=params)
    if not response.ok:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise MlflowError(f"MLflow {method} {endpoint}: {response.status_code} {message}")
    return response.json() if response.content else {}


def experiment_id(name: str) -> str:
    """The id of the named experiment, created when missing."""
    try:
        found = mlflow_api("GET", "experiments/get-by-name", {"experiment_name": name})
        return str(found["experiment"]["experiment_id"])
    except MlflowError as exc:
        if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and " 404 " not in str(exc):
            raise
    return str(mlflow_api("POST", "experiments/create", {"name": name})["experiment_id"])


def set_run_tags(run_id: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        mlflow_api("POST", "runs/set-tag", {"run_id": run_id, "key": key, "value": value})


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        mlflow_api(
            "POST",
            "model-versions/set-tag",
            {"name": name, "version": version, "key": key, "value": value},
        )


def report_run_id(report_id: str, experiment: str) -> str | None:
    """The MLflow run that holds a drift report (Lifecycle tags it with the report's id)."""
    found = mlflow_api(
        "POST",
        "runs/search",
        {
            "experiment_ids": [experiment_id(experiment)],
            "filter": f"tags.`{REPORT_ID_TAG}` = '{report_id}'",
            "max_results": 1,
        },
    )
    runs = found.get("runs", [])
    return str(runs[0]["info"]["run_id"]) if runs else None

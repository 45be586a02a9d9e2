"""The closed loop, end to end with no human step: v1 serves; traffic shifts and its feedback
says v1 is often wrong; drift_check (Airflow's scheduler runs it: the test only stands in for
the hourly clock) finds drift and triggers retrain, which trains on the labelled production
rows, passes the gates and promotes v2; the API and the worker serve v2; lineage tags lead from
the report to v2 and back.

Real parts throughout: Airflow's API server, scheduler and DAG processor (LocalExecutor, its
metadata on PostgreSQL), MLflow on PostgreSQL, the API and a Celery worker on RabbitMQ.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipelines.api import served_version
from tests.support.airflow import AirflowServices, airflow_services
from tests.support.api import IRIS_ROW, metric_value
from tests.support.stack import Stack
from tests.support.traffic import simulated, steady_traffic

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

SHIFTS = ("petal length (cm)=+1.5", "sepal width (cm)=+1.5")


@pytest.fixture(scope="module")
def shifted(stack: Stack) -> None:
    """v1 serves shifted traffic; the feedback is each row's true class, which the shift fools
    v1 about."""
    assert httpx.get(f"{stack.api.url}/model").json()["version"] == "1"
    simulated(stack, 300, seed=11, shifts=SHIFTS, feedback_truth=True)


@pytest.fixture(scope="module")
def airflow(stack: Stack, shifted: None) -> Iterator[AirflowServices]:
    """Airflow, started once the traffic is in: the scheduler runs drift_check's latest
    hourly slot as soon as the DAG is parsed (catchup off), with no trigger from anyone."""
    env = {**os.environ, **stack.env, "LIFECYCLE_API_URL": stack.api.url}
    with airflow_services(stack.settings, env, stack.workdir) as services:
        yield services


def _xcom(airflow: AirflowServices, dag_id: str, run_id: str, task_id: str) -> Any:
    path = (
        f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
        "/xcomEntries/return_value"
    )
    response = airflow.api("GET", path, params={"deserialize": "true", "stringify": "false"})
    assert response.status_code == 200, response.text
    return response.json()["value"]


def _first_run(airflow: AirflowServices, dag_id: str, timeout: float = 120) -> dict[str, Any]:
    """The first run of `dag_id` (started by the scheduler or by another DAG)."""
    airflow.wait_dags(dag_id)
    deadline = time.monotonic() + timeout
    while not (runs := airflow.runs(dag_id)):
        assert time.monotonic() < deadline, f"no run of {dag_id} within {timeout:g}s"
        time.sleep(1)
    return runs[0]


def test_drift_retrains_gates_promotes_and_serves_v2_with_lineage(
    stack: Stack, airflow: AirflowServices
) -> None:
    client = MlflowClient(stack.settings.resolved_tracking_uri())
    drift_run = _first_run(airflow, "drift_check")
    assert drift_run["run_type"] == "scheduled", drift_run
    run_id = drift_run["dag_run_id"]
    assert airflow.wait_run("drift_check", run_id, timeout=300) == "success"
    report = _xcom(airflow, "drift_check", run_id, "report")
    assert report["retrain"] is True, report
    assert report["verdict"] == "drift"
    assert report["accuracy"] < report["min_accuracy"]
    assert airflow.task_instances("drift_check", run_id)["trigger_retrain"] == "success"

    with steady_traffic(stack.api.url):
        # The retrain run drift_check triggered, with the report's id: no one else starts it.
        retrain = _first_run(airflow, "retrain")
        assert retrain["conf"]["report_id"] == report["report_id"]
        assert retrain["conf"]["drift_dag_run_id"] == run_id
        retrain_run = retrain["dag_run_id"]
        state = airflow.wait_run("retrain", retrain_run, timeout=600)
        assert state == "success", {
            task: airflow.task_log("retrain", retrain_run, task)[-3000:]
            for task, s in airflow.task_instances("retrain", retrain_run).items()
            if s == "failed"
        }

    trained = _xcom(airflow, "retrain", retrain_run, "train_and_promote")
    version = str(trained["version"])
    assert version == "2" and trained["stage"] == "Production"
    # Both scoring paths serve v2, and did so within the poll interval of the promotion (plus
    # the load and smoke test of the new version).
    assert httpx.get(f"{stack.api.url}/model").json()["version"] == version
    worker = httpx.get(stack.worker_metrics_url(), timeout=5).text
    assert served_version(worker, stack.name) == version
    # v2 answers with v1's class labels, though it was trained from a file of class values.
    answer = httpx.post(f"{stack.api.url}/predict", json={"features": IRIS_ROW}).json()
    assert answer["label"] == "setosa" and answer["model"]["version"] == version
    served = _xcom(airflow, "retrain", retrain_run, "wait_served")
    poll = float(stack.env["LIFECYCLE_POLL_INTERVAL"])
    assert served["api_version"] == served["worker_version"] == version
    assert served["seconds"] < poll + 15, served

    # v2 was trained on the labelled production rows, beside v1's training rows.
    rows = _xcom(airflow, "retrain", retrain_run, "training_set")
    assert rows["labelled_rows"] >= 300
    assert rows["rows"] == rows["base_rows"] + rows["labelled_rows"]
    frame = pd.read_csv(Path(rows["path"]))
    assert len(frame) == rows["rows"]
    assert frame["petal length (cm)"].max() > 6.9 + 1.0  # shifted rows are in it
    run = client.get_run(trained["run_id"])
    assert run.data.params["dataset"] == rows["path"]

    # Lineage: report → retrain run → v2 → its first prediction, and back.
    report_run = client.get_run(report["report_run_id"])
    assert report_run.data.tags["lifecycle.retrain_run_id"] == trained["run_id"]
    assert report_run.data.tags["lifecycle.retrained_version"] == version
    assert report_run.data.tags["lifecycle.airflow_dag_run_id"] == run_id
    assert run.data.tags["lifecycle.drift_report_id"] == report["report_id"]
    tags = client.get_model_version(stack.name, version).tags
    assert tags["lifecycle.drift_report_id"] == report["report_id"]
    assert tags["lifecycle.retrain_run_id"] == trained["run_id"]
    assert client.get_model_version(stack.name, version).run_id == trained["run_id"]
    first = tags["lifecycle.first_request_id"]
    assert stack.stored("request_id = :r AND model_version = :v", r=first, v=version)
    metrics = httpx.get(f"{stack.api.url}/metrics").text
    promoted = metric_value(
        metrics, "lifecycle_automatic_promotions_total", model=stack.name, outcome="promoted"
    )
    assert promoted == 1
    # One report, one retrain: the loop does not run twice for one drift.
    assert len(airflow.runs("retrain")) == 1

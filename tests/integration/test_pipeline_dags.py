"""Each DAG run with `dag.test()` in Airflow's own environment against a real stack (MLflow on
PostgreSQL, API, Celery worker on RabbitMQ): batch_scoring scores files and moves them,
drift_check on unshifted traffic does not trigger a retrain, retrain produces a gated version
(refused: v1 keeps serving, the run fails with the gate table in its log and the refusal is
counted; accepted: promoted, served by the API and the worker, lineage tagged)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris

from lifecycle.core.settings import PROJECT_ROOT
from tests.support.api import IRIS_ROW, metric_value, wait_version
from tests.support.dags import DagEnv
from tests.support.stack import FEATURES, Stack
from tests.support.traffic import simulated, steady_traffic

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def dags(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> DagEnv:
    env = DagEnv(
        tmp_path_factory.mktemp("airflow"),
        stack.settings,
        {**stack.env, "LIFECYCLE_API_URL": stack.api.url},
    )
    env.migrate()
    return env


@pytest.fixture(scope="module")
def inbox(stack: Stack) -> Path:
    return Path(stack.env["LIFECYCLE_DATA_DIR"]) / "pipelines"


@pytest.fixture
def background_traffic(stack: Stack) -> Iterator[None]:
    with steady_traffic(stack.api.url):
        yield


def test_batch_scoring_scores_files_and_moves_them(dags: DagEnv, stack: Stack, inbox: Path) -> None:
    (inbox / "inbox").mkdir(parents=True, exist_ok=True)
    # Iris rows themselves: the drift check below reads this window too, and must see no drift.
    frame = load_iris(as_frame=True).frame[FEATURES].sample(120, random_state=3)
    frame.to_csv(inbox / "inbox" / "morning.csv", index=False)
    frame.head(30).to_parquet(inbox / "inbox" / "noon.parquet", index=False)

    result, output = dags.test("batch_scoring")

    assert result["state"] == "success", output[-4000:]
    assert result["tasks"]["score[0]"] == "success"
    assert result["tasks"]["score[1]"] == "success"
    assert not list((inbox / "inbox").iterdir())
    done = inbox / "done"
    assert (done / "morning.csv").exists() and (done / "noon.parquet").exists()
    scored = pd.read_csv(done / "morning.scored.csv")
    assert len(scored) == 120
    assert len(pd.read_parquet(done / "noon.scored.parquet")) == 30
    summary = yaml.safe_load((done / "morning.json").read_text())
    assert summary["rows"] == 120
    assert str(summary["model_version"]) == "1"
    assert summary["model_name"] == stack.name
    recorded = result["xcom"]["record"]
    assert recorded["rows"] == 150 and recorded["done"] == 2 and recorded["failed"] == 0
    assert recorded["model_versions"] == ["1"]
    # The DAG run is in MLflow, through the provider's hook.
    run = MlflowClient(stack.settings.resolved_tracking_uri()).get_run(recorded["mlflow_run_id"])
    assert run.data.metrics["batch_rows"] == 150
    assert run.data.tags["lifecycle.model_versions"] == "1"
    # Every scored row is in the prediction log, with its version.
    rows = stack.stored("source = 'batch' AND model_version = '1'")
    assert len(rows) >= 150


def test_batch_scoring_moves_a_bad_file_to_failed_with_the_reason(
    dags: DagEnv, inbox: Path
) -> None:
    (inbox / "inbox").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"colour": ["red", "blue"]}).to_csv(inbox / "inbox" / "wrong.csv", index=False)

    result, output = dags.test("batch_scoring")

    assert result["state"] == "failed"
    assert result["tasks"]["score[0]"] == "success"  # the file failed, not the task
    assert result["tasks"]["record"] == "failed"
    failed = inbox / "failed"
    assert (failed / "wrong.csv").exists()
    reason = (failed / "wrong.reason.txt").read_text()
    assert "sepal length (cm)" in reason or "missing" in reason.lower(), reason
    assert "wrong.csv" in output


@pytest.fixture(scope="module")
def drift_run(dags: DagEnv, stack: Stack) -> tuple[dict[str, Any], str]:
    """drift_check on unshifted traffic whose feedback agrees with every prediction."""
    # A fixed seed: the retrain below is gated against v1 on rows v1 itself labelled, so
    # whether the candidate comes within the margin depends on which rows were drawn.
    simulated(stack, 200, seed=5, feedback_accuracy=1.0)
    return dags.test("drift_check")


def test_drift_check_on_unshifted_traffic_does_not_trigger(
    drift_run: tuple[dict[str, Any], str], stack: Stack
) -> None:
    result, output = drift_run

    assert result["state"] == "success", output[-4000:]
    report = result["xcom"]["report"]
    assert report["verdict"] != "drift" and report["retrain"] is False, report
    assert report["accuracy"] == pytest.approx(1.0)
    assert result["tasks"]["needs_retrain"] == "success"
    assert result["tasks"]["trigger_retrain"] == "skipped"
    assert "no retrain: verdict" in output
    # The report's run carries the DAG run that made it.
    run = MlflowClient(stack.settings.resolved_tracking_uri()).get_run(report["report_run_id"])
    assert run.data.tags["lifecycle.airflow_dag_run_id"] == result["run_id"]


def _gates_conf(tmp: Path, **gates: object) -> Path:
    conf = tmp / "conf"
    shutil.copytree(PROJECT_ROOT / "conf", conf)
    path = conf / "gates.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **gates}))
    return conf


def test_retrain_refused_by_the_gates_fails_and_leaves_v1_serving(
    dags: DagEnv, stack: Stack, tmp_path: Path
) -> None:
    refusing = DagEnv(
        tmp_path / "airflow",
        stack.settings,
        {
            **stack.env,
            "LIFECYCLE_API_URL": stack.api.url,
            "LIFECYCLE_CONF_DIR": str(_gates_conf(tmp_path, min_metric=1.01)),
        },
    )
    refusing.migrate()

    result, output = refusing.test("retrain")

    assert result["state"] == "failed"
    assert result["tasks"]["train_and_promote"] == "failed"
    assert result["tasks"]["lineage"] == "upstream_failed"
    # The gate table, in the task's log.
    assert re.search(r"gate\s+result", output), output[-4000:]
    assert re.search(r"minimum\s+FAIL\s+candidate=[0-9.]+ minimum=1\.0100", output)
    assert re.search(r"signature\s+pass", output)
    assert httpx.get(f"{stack.api.url}/model").json()["version"] == "1"
    versions = MlflowClient(stack.settings.resolved_tracking_uri()).search_model_versions(
        f"name = '{stack.name}'"
    )
    refused = max(versions, key=lambda v: int(v.version))
    assert refused.version != "1" and refused.current_stage != "Production"
    metrics = httpx.get(f"{stack.api.url}/metrics").text
    assert (
        metric_value(
            metrics, "lifecycle_automatic_promotions_total", model=stack.name, outcome="refused"
        )
        == 1
    )


def test_retrain_promotes_a_gated_version_served_everywhere(
    dags: DagEnv,
    stack: Stack,
    drift_run: tuple[dict[str, Any], str],
    background_traffic: None,
) -> None:
    client = MlflowClient(stack.settings.resolved_tracking_uri())
    drift = drift_run[0]
    report_id = drift["xcom"]["report"]["report_id"]

    result, output = dags.test("retrain", {"report_id": report_id})

    assert result["state"] == "success", output[-6000:]
    trained = result["xcom"]["train_and_promote"]
    version = str(trained["version"])
    assert trained["outcome"] == "promoted" and trained["stage"] == "Production"
    assert client.get_model_version(stack.name, version).current_stage == "Production"
    wait_version(stack.api.url, version, timeout=5)
    answer = httpx.post(f"{stack.api.url}/predict", json={"features": IRIS_ROW}).json()
    assert answer["label"] == "setosa"  # v1's labels, though trained from a file of 0/1/2
    served = result["xcom"]["wait_served"]
    assert served["api_version"] == version and served["worker_version"] == version
    # The training set held the labelled production rows beside v1's training rows.
    rows = result["xcom"]["training_set"]
    assert (
        rows["labelled_rows"] >= 200 and rows["rows"] == rows["base_rows"] + rows["labelled_rows"]
    )
    # Lineage: report → run → version → first prediction, and back.
    tags = client.get_model_version(stack.name, version).tags
    assert tags["lifecycle.drift_report_id"] == report_id
    assert tags["lifecycle.retrain_run_id"] == trained["run_id"]
    first = tags["lifecycle.first_request_id"]
    assert stack.stored("request_id = :r AND model_version = :v", r=first, v=version)
    run = client.get_run(trained["run_id"])
    assert run.data.tags["lifecycle.drift_report_id"] == report_id
    report_run = client.get_run(drift["xcom"]["report"]["report_run_id"])
    assert report_run.data.tags["lifecycle.retrained_version"] == version
    assert report_run.data.tags["lifecycle.retrain_run_id"] == trained["run_id"]
    metrics = httpx.get(f"{stack.api.url}/metrics").text
    assert (
        metric_value(
            metrics, "lifecycle_automatic_promotions_total", model=stack.name, outcome="promoted"
        )
        == 1
    )

"""The Celery worker's own /metrics, read from a real `lifecycle worker`.

MLflow on PostgreSQL (session fixtures), the application database on PostgreSQL, and the
worker as a subprocess on a fresh RabbitMQ vhost with its metrics on a free port. Tasks go
through the same Celery client the API uses. The registered model is this test's alone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from lifecycle.core.settings import Settings
from serving.worker import SCORE_TASK, LifecycleCelery, make_celery
from tests.support.api import IRIS_ROW, metric_value, register_broken_version
from tests.support.services import free_port
from tests.support.worker import rabbit_vhost, start_worker
from training.train import TrainRequest, train

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

POLL = 0.5
TASKS = "lifecycle_worker_tasks_total"
TASK_SECONDS = "lifecycle_worker_task_duration_seconds_count"
INFO = "lifecycle_model_info"
SWAPS = "lifecycle_model_swaps_total"
FAILURES = "lifecycle_model_swap_failures_total"


def _production(settings: Settings, name: str, version: str | None = None) -> str:
    """Promote `version`, or a newly trained one, to Production; returns its number."""
    if version is None:
        version = str(train(settings, TrainRequest("iris", register=True, model_name=name)).version)
    MlflowClient(settings.resolved_tracking_uri()).transition_model_version_stage(
        name, version, "Production", archive_existing_versions=True
    )
    return version


def _wait_metrics(url: str, until: Callable[[str], bool], timeout: float) -> str:
    """The worker's /metrics once `until` holds for it; fails with the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(url, timeout=5).text
        if until(text) or time.monotonic() > deadline:
            assert until(text), f"not reached in {timeout}s:\n{text}"
            return text
        time.sleep(0.2)


def _score(celery: LifecycleCelery, body: Any) -> Any:
    request_id = uuid.uuid4().hex
    sent = celery.send_task(SCORE_TASK, args=[request_id, body, "async"], task_id=request_id)
    return sent.get(timeout=60, propagate=False)


def test_worker_metrics_follow_tasks_swaps_and_failed_swaps(
    settings: Settings, tmp_path: Path
) -> None:
    name = f"worker-metrics-{uuid.uuid4().hex[:8]}"
    v1 = _production(settings, name)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with rabbit_vhost() as broker:
        client_settings = settings.model_copy(update={"broker_url": broker, "model_name": name})
        celery = make_celery(client_settings)
        worker = start_worker(
            {
                "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri(),
                "LIFECYCLE_DATABASE_URL": settings.resolved_database_url(),
                "LIFECYCLE_BROKER_URL": broker,
                "LIFECYCLE_MODEL_NAME": name,
                "LIFECYCLE_POLL_INTERVAL": str(POLL),
                "LIFECYCLE_DATA_DIR": str(tmp_path / "worker"),
                "LIFECYCLE_AMQP_CONSUMER": "false",
                "LIFECYCLE_WORKER_METRICS_PORT": str(port),
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            },
            tmp_path / "worker.log",
        )
        try:
            # The model the worker loaded at start.
            text = _wait_metrics(url, lambda t: metric_value(t, INFO, version=v1) == 1, 10)
            assert metric_value(text, SWAPS, name=name) == 1

            # One scored task and one refused (bad input is not retried): counted and timed.
            result = _score(celery, {"features": IRIS_ROW})
            assert result["model"]["version"] == v1
            assert isinstance(_score(celery, {"features": [1.0, 2.0]}), Exception)
            text = _wait_metrics(
                url, lambda t: metric_value(t, TASK_SECONDS, task=SCORE_TASK) == 2, 10
            )
            assert metric_value(text, TASKS, task=SCORE_TASK, state="succeeded") == 1
            assert metric_value(text, TASKS, task=SCORE_TASK, state="failed") == 1
            assert metric_value(text, TASKS, state="retried") == 0
            assert metric_value(text, "lifecycle_predictions_total", version=v1) == 1
            assert metric_value(text, "lifecycle_prediction_log_written_total") == 1

            # A promotion: the worker swaps within the poll interval and says so.
            v2 = _production(settings, name)
            text = _wait_metrics(url, lambda t: metric_value(t, INFO, version=v2) == 1, POLL + 10)
            assert metric_value(text, SWAPS, name=name) == 2
            assert metric_value(text, INFO, version=v1) == 0
            assert metric_value(text, "lifecycle_model_swap_seconds_count") == 2

            # A broken version: the failure is counted and v2 keeps serving.
            mlflow_client = MlflowClient(settings.resolved_tracking_uri())
            broken = _production(settings, name, register_broken_version(mlflow_client, name, v2))
            text = _wait_metrics(
                url, lambda t: metric_value(t, FAILURES, name=name, version=broken) >= 1, POLL + 10
            )
            assert metric_value(text, INFO, version=v2) == 1
            assert metric_value(text, INFO, version=broken) == 0
            assert metric_value(text, SWAPS, name=name) == 2
            assert _score(celery, {"features": IRIS_ROW})["model"]["version"] == v2
        finally:
            worker.stop()
            celery.close()

"""Task outcomes from Celery's signals and the worker's metrics server, without a broker.

Tasks run eagerly (in this thread, through Celery's real tracer and signals); the server is
prometheus-client's on a free port. The real worker is in tests/integration/test_worker_metrics.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from celery import Celery
from prometheus_client import CollectorRegistry

from serving.metrics import Metrics, TaskMetrics
from serving.worker_metrics import MetricsServer, TaskObserver
from tests.support.api import metric_value
from tests.support.services import free_port


def _app() -> Celery:
    app = Celery("metrics-test", set_as_current=False)
    app.conf.task_always_eager = True
    return app


@pytest.fixture
def observed() -> Iterator[tuple[Celery, CollectorRegistry]]:
    app = _app()
    attempts: list[int] = []

    @app.task(name="t.ok")
    def ok() -> str:
        return "ok"

    @app.task(name="t.bad")
    def bad() -> None:
        raise ValueError("bad input")

    @app.task(name="t.flaky", bind=True, max_retries=3)
    def flaky(self: Any) -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise self.retry(countdown=0)
        return "ok"

    @app.task(name="t.unwatched")
    def unwatched() -> str:
        return "ok"

    registry = CollectorRegistry()
    observer = TaskObserver(app, ("t.ok", "t.bad", "t.flaky"), TaskMetrics(registry))
    observer.connect()
    try:
        yield app, registry
    finally:
        observer.disconnect()


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_tasks_are_counted_by_name_and_outcome_and_timed(
    observed: tuple[Celery, CollectorRegistry],
) -> None:
    app, registry = observed
    for _ in range(2):
        app.tasks["t.ok"].delay()
    app.tasks["t.bad"].delay()
    app.tasks["t.flaky"].delay()
    app.tasks["t.unwatched"].delay()

    tasks = "lifecycle_worker_tasks_total"
    assert _value(registry, tasks, task="t.ok", state="succeeded") == 2
    assert _value(registry, tasks, task="t.bad", state="failed") == 1
    # The first run asked for a retry; Celery ran the retry (eagerly) and it succeeded.
    assert _value(registry, tasks, task="t.flaky", state="retried") == 1
    assert _value(registry, tasks, task="t.flaky", state="succeeded") == 1
    assert _value(registry, tasks, task="t.unwatched", state="succeeded") == 0
    duration = "lifecycle_worker_task_duration_seconds"
    assert _value(registry, f"{duration}_count", task="t.ok") == 2
    assert _value(registry, f"{duration}_count", task="t.flaky") == 2
    assert _value(registry, f"{duration}_sum", task="t.ok") > 0


def test_other_apps_tasks_and_a_disconnected_observer_count_nothing(
    observed: tuple[Celery, CollectorRegistry],
) -> None:
    _, registry = observed
    other = _app()

    # The same task name on another app in the same process (the API's client, a test).
    @other.task(name="t.ok")
    def ok() -> str:
        return "ok"

    ok.delay()
    assert _value(registry, "lifecycle_worker_tasks_total", task="t.ok", state="succeeded") == 0

    registry = CollectorRegistry()
    observer = TaskObserver(other, ("t.ok",), TaskMetrics(registry))
    observer.connect()
    observer.disconnect()
    ok.delay()
    assert _value(registry, "lifecycle_worker_tasks_total", task="t.ok", state="succeeded") == 0


def test_server_serves_the_runtime_registry_and_a_taken_port_is_not_fatal() -> None:
    metrics = Metrics()
    TaskMetrics(metrics.registry).observe_task("lifecycle.score", "succeeded", 0.01)
    metrics.written(3)
    server = MetricsServer(metrics.registry, "127.0.0.1", free_port())
    assert server.start()
    try:
        text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
        assert metric_value(text, "lifecycle_worker_tasks_total", task="lifecycle.score") == 1
        assert metric_value(text, "lifecycle_prediction_log_written_total") == 3
        second = MetricsServer(CollectorRegistry(), "127.0.0.1", server.port)
        assert not second.start()
        second.stop()
    finally:
        server.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=2)

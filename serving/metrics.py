"""Prometheus metrics (prefix `lifecycle_`), correct across uvicorn workers.

With `PROMETHEUS_MULTIPROC_DIR` set (as `lifecycle serve --workers N` does), prometheus-client
writes every value to per-process files and a scrape merges them, so each worker counts its
own requests and `/metrics` on any worker shows the sum. The variable must be set before
prometheus-client is imported, which is why the CLI sets it and this module only reads it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from serving.runtime import LoadedModel

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SWAP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# From a one-row task (milliseconds) to a batch file (minutes).
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0, 1800.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST

FeedbackStats = Mapping[str, Mapping[str, float]]


class Metrics:
    """Every metric of the API; also the store's and the holder's observer."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        # A registry per instance, so several apps (tests) in one process do not collide.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ("endpoint", "method", "status")
        self.requests = Counter(
            "lifecycle_requests", "HTTP requests by endpoint and status.", labels, registry=r
        )
        self.latency = Histogram(
            "lifecycle_request_duration_seconds",
            "HTTP request latency by endpoint and status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "lifecycle_predictions",
            "Predictions by class and model version.",
            ("model", "version", "label"),
            registry=r,
        )
        self.model_info = Gauge(
            "lifecycle_model_info",
            "The served model: 1 for the current version, 0 for versions served before.",
            ("name", "version", "stage", "alias", "run_id"),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_stale = Gauge(
            "lifecycle_model_stale",
            "1 while the served version is not the one the target points at (refused, "
            "pending or gone), else 0.",
            ("name",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.swaps = Counter(
            "lifecycle_model_swaps", "Successful model swaps.", ("name",), registry=r
        )
        self.swap_failures = Counter(
            "lifecycle_model_swap_failures",
            "Versions that failed to load or smoke-test; the previous model kept serving.",
            ("name", "version"),
            registry=r,
        )
        self.swap_seconds = Histogram(
            "lifecycle_model_swap_seconds",
            "Time to download, load and smoke-test a new version.",
            buckets=SWAP_BUCKETS,
            registry=r,
        )
        self.queue_depth_gauge = Gauge(
            "lifecycle_prediction_log_queue_depth",
            "Predictions waiting to be written to the store.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_written = Counter(
            "lifecycle_prediction_log_written", "Predictions written to the store.", registry=r
        )
        self.log_spooled = Counter(
            "lifecycle_prediction_log_spooled",
            "Predictions spooled to disk while the store was unavailable.",
            registry=r,
        )
        self.log_replayed = Counter(
            "lifecycle_prediction_log_replayed",
            "Spooled predictions replayed into the store.",
            registry=r,
        )
        self.log_dropped = Counter(
            "lifecycle_prediction_log_dropped",
            "Predictions dropped because both the queue and the spool were full.",
            registry=r,
        )
        feedback = ("model", "version")
        self.feedback_accuracy = Gauge(
            "lifecycle_feedback_accuracy",
            "Accuracy of predictions that received feedback, per model version.",
            feedback,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.feedback_precision = Gauge(
            "lifecycle_feedback_precision",
            "Macro-averaged precision from feedback, per model version.",
            feedback,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.feedback_samples = Gauge(
            "lifecycle_feedback_samples",
            "Predictions with feedback, per model version.",
            feedback,
            registry=r,
            multiprocess_mode="livemax",
        )
        self._feedback_at = 0.0

    # HTTP

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(endpoint, method, code).inc()
        self.latency.labels(endpoint, method, code).observe(seconds)

    def observe_predictions(self, model: LoadedModel, labels: list[str]) -> None:
        for label in labels:
            self.predictions.labels(model.name, model.version, label).inc()

    # SwapObserver

    def swapped(self, model: LoadedModel, previous: LoadedModel | None, seconds: float) -> None:
        if previous is not None:
            self.model_info.labels(*_info(previous)).set(0)
        self.model_info.labels(*_info(model)).set(1)
        self.swaps.labels(model.name).inc()
        self.swap_seconds.observe(seconds)

    def swap_failed(self, name: str, version: str, reason: str) -> None:
        self.swap_failures.labels(name, version).inc()

    def relabelled(self, model: LoadedModel, previous: LoadedModel) -> None:
        # The old labels stay at 0, like a version served before: a dashboard sees the move.
        self.model_info.labels(*_info(previous)).set(0)
        self.model_info.labels(*_info(model)).set(1)

    def stale(self, name: str, stale: bool) -> None:
        self.model_stale.labels(name).set(1 if stale else 0)

    # StoreObserver

    def queue_depth(self, depth: int) -> None:
        self.queue_depth_gauge.set(depth)

    def written(self, n: int) -> None:
        self.log_written.inc(n)

    def spooled(self, n: int) -> None:
        self.log_spooled.inc(n)

    def replayed(self, n: int) -> None:
        self.log_replayed.inc(n)

    def dropped(self, n: int) -> None:
        self.log_dropped.inc(n)

    # Feedback quality

    def feedback_changed(self) -> None:
        """New feedback: refresh the quality gauges on the next scrape, not 10 s later."""
        self._feedback_at = 0.0

    def feedback_due(self, every: float) -> bool:
        return time.monotonic() - self._feedback_at >= every

    def refresh_feedback(self, model_name: str, stats: Callable[[str], FeedbackStats]) -> None:
        self._feedback_at = time.monotonic()
        for version, values in stats(model_name).items():
            self.feedback_accuracy.labels(model_name, version).set(values["accuracy"])
            self.feedback_precision.labels(model_name, version).set(values["precision_macro"])
            self.feedback_samples.labels(model_name, version).set(values["n"])

    def render(self) -> bytes:
        if self.multiprocess_dir:
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=self.multiprocess_dir)
            return generate_latest(merged)
        return generate_latest(self.registry)


class TaskMetrics:
    """The Celery worker's task metrics, registered beside its runtime's `Metrics`.

    Apart from `Metrics` so that the API's /metrics does not list task metrics it never fills.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tasks = Counter(
            "lifecycle_worker_tasks",
            "Celery task runs by task name and outcome (succeeded, failed, retried).",
            ("task", "state"),
            registry=registry,
        )
        self.duration = Histogram(
            "lifecycle_worker_task_duration_seconds",
            "Celery task run time by task name, whatever the outcome.",
            ("task",),
            buckets=TASK_BUCKETS,
            registry=registry,
        )

    def observe_task(self, task: str, state: str, seconds: float) -> None:
        self.tasks.labels(task, state).inc()
        self.duration.labels(task).observe(seconds)


def _info(model: LoadedModel) -> tuple[str, str, str, str, str]:
    return (model.name, model.version, model.stage or "", model.alias or "", model.run_id or "")


def multiprocess_dir() -> str | None:
    """Read at the composition root only: prometheus-client decided at import time."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

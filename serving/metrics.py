"""Prometheus metrics (prefix `lifecycle_`), correct across uvicorn workers.

With `PROMETHEUS_MULTIPROC_DIR` set (as `lifecycle serve --workers N` does), prometheus-client
writes every value to per-process files and a scrape merges them, so each worker counts its
own requests and `/metrics` on any worker shows the sum. The variable must be set before
prometheus-client is imported, which is why the CLI sets it and this module only reads it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from lifecycle.core.store.promotions import OUTCOMES, PromotionLog
from lifecycle.core.store.report_index import ReportEntry, ReportIndex
from serving.runtime import LoadedModel

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SWAP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# From a one-row task (milliseconds) to a batch file (minutes).
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0, 1800.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Reports come every few minutes; a few seconds of cache make Prometheus, a Grafana "now"
# query and a curl in the same moment cost one index query, and never hide a new report long.
REPORT_CACHE_SECONDS = 5.0

log = logging.getLogger(__name__)

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
        self.log_shed = Counter(
            "lifecycle_prediction_log_shed",
            "Predictions refused (503) because the prediction log's queue and spool were full.",
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
        # `labels()` costs a lock and a tuple check per call; the children of the label sets
        # seen so far are kept here instead (a few per endpoint and status, per class).
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._prediction_children: dict[tuple[str, str, str], Counter] = {}
        # Collectors that compute their values at scrape time in this process (the drift
        # gauges). In multiprocess mode render() merges only the workers' files, so these are
        # added to the merged registry there; they are never written to the files, so a
        # scrape shows them once, from whichever worker answers, not once per worker.
        self._live: list[Collector] = []
        self._reports: ReportGauges | None = None
        self._promotions: PromotionCounter | None = None

    # HTTP

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._request_children.get(key)
        if children is None:
            code = str(status)
            children = (
                self.requests.labels(endpoint, method, code),
                self.latency.labels(endpoint, method, code),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_predictions(self, model: LoadedModel, labels: list[str]) -> None:
        counts = {labels[0]: 1} if len(labels) == 1 else Tally(labels)
        for label, n in counts.items():
            key = (model.name, model.version, label)
            child = self._prediction_children.get(key)
            if child is None:
                child = self._prediction_children[key] = self.predictions.labels(*key)
            child.inc(n)

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

    def shed(self, n: int) -> None:
        self.log_shed.inc(n)

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

    # Drift reports

    def watch_reports(self, index: ReportIndex, interval_seconds: float) -> None:
        """Export the newest report of every model version, read from `index` at scrape time.

        Gauges: lifecycle_drift_share{model,version}, lifecycle_feature_drift_score and
        lifecycle_feature_drifted{model,version,feature}, lifecycle_report_age_seconds{model},
        lifecycle_report_interval_seconds (`interval_seconds`, the schedule the alert compares
        the age with) and lifecycle_report_index_up (0 when the last read failed; the report
        gauges are then left out and the rest of the scrape is unaffected).
        """
        # A second call (one Metrics shared by two apps, as tests do) replaces the first
        # rather than failing on duplicate names or exporting two indexes' values.
        if self._reports is not None:
            self._remove_live(self._reports)
        self._reports = ReportGauges(index, interval_seconds)
        self._add_live(self._reports)

    def watch_promotions(self, log: PromotionLog, model_name: str) -> None:
        """Export lifecycle_automatic_promotions_total{model,outcome}, counted in `log` at
        scrape time; `model_name`'s promoted and refused series are there from the start (at
        0), so increase() sees the first refusal."""
        if self._promotions is not None:
            self._remove_live(self._promotions)
        self._promotions = PromotionCounter(log, model_name)
        self._add_live(self._promotions)

    def _add_live(self, collector: Collector) -> None:
        if not self.multiprocess_dir:
            self.registry.register(collector)
        self._live.append(collector)

    def _remove_live(self, collector: Collector) -> None:
        if not self.multiprocess_dir:
            self.registry.unregister(collector)
        self._live.remove(collector)

    def render(self) -> bytes:
        if self.multiprocess_dir:
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=self.multiprocess_dir)
            for collector in self._live:
                merged.register(collector)
            return generate_latest(merged)
        return generate_latest(self.registry)


class ReportGauges(Collector):
    """The drift gauges: the report index's latest entry per version, cached briefly.

    A collector rather than Gauge objects: the values live in the database, not in this
    process, so reading them at scrape time keeps every worker (and a restarted API) right
    without a refresh loop, and old versions or features never linger as stale label sets.
    """

    def __init__(
        self,
        index: ReportIndex,
        interval_seconds: float,
        *,
        cache_seconds: float = REPORT_CACHE_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._index = index
        self._interval = float(interval_seconds)
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._entries: list[ReportEntry] | None = None

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering (with auto_describe) checks duplicates without a query.
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        entries = self._read()
        families = self._families()
        share, score, drifted, age, interval, up = families
        interval.add_metric([], self._interval)
        up.add_metric([], 0.0 if entries is None else 1.0)
        if entries is not None:
            now = self._clock()
            newest: dict[str, datetime] = {}
            for entry in entries:
                labels = [entry.model_name, entry.model_version]
                share.add_metric(labels, entry.drift_share)
                for feature in entry.features:
                    score.add_metric([*labels, feature.feature], feature.score)
                    drifted.add_metric([*labels, feature.feature], 1.0 if feature.drifted else 0.0)
                known = newest.get(entry.model_name)
                if known is None or entry.created_at > known:
                    newest[entry.model_name] = entry.created_at
            for model, created_at in sorted(newest.items()):
                # Computed now, not cached: the age must keep growing when reports stop.
                age.add_metric([model], max(0.0, (now - created_at).total_seconds()))
        # Without samples a family is left out whole, so an unreadable index shows no
        # HELP/TYPE lines for gauges it did not fill.
        return [family for family in families if family.samples]

    def _read(self) -> list[ReportEntry] | None:
        """The cached entries, re-read when older than the cache; None when the read failed.

        A failure is cached too, so a database that is down costs one connect attempt per
        cache period, not one per scrape.
        """
        with self._lock:  # concurrent scrapes wait for one query instead of each running it
            if time.monotonic() - self._read_at < self._cache_seconds:
                return self._entries
            try:
                self._entries = self._index.latest_per_version()
            except Exception as exc:  # a scrape must not fail because the index cannot be read
                log.warning("drift gauges not exported: %s", exc)
                self._entries = None
            self._read_at = time.monotonic()
            return self._entries

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        version = ["model", "version"]
        feature = [*version, "feature"]
        return (
            GaugeMetricFamily(
                "lifecycle_drift_share",
                "Share of drifted features in the newest drift report, per model version.",
                labels=version,
            ),
            GaugeMetricFamily(
                "lifecycle_feature_drift_score",
                "Stat test score of each feature in the newest drift report (a p-value or a "
                "distance, depending on the test).",
                labels=feature,
            ),
            GaugeMetricFamily(
                "lifecycle_feature_drifted",
                "1 when the feature drifted in the newest drift report, else 0.",
                labels=feature,
            ),
            GaugeMetricFamily(
                "lifecycle_report_age_seconds",
                "Seconds since the newest report of the model, any version.",
                labels=["model"],
            ),
            GaugeMetricFamily(
                "lifecycle_report_interval_seconds",
                "Seconds between scheduled reports (LIFECYCLE_REPORT_INTERVAL).",
            ),
            GaugeMetricFamily(
                "lifecycle_report_index_up",
                "1 when the report index was read at the last scrape, 0 when it could not be.",
            ),
        )


class PromotionCounter(Collector):
    """Automatic promotions by model and outcome, counted in the promotion log.

    Read at scrape time like the drift gauges: the retrain DAG writes the rows from another
    process, and the counts in the database survive API restarts, as a counter must. The read
    is one GROUP BY over a table of a few rows per retrain, cached briefly; when it fails the
    family is left out (a counter must not drop to 0) and lifecycle_automatic_promotions_up
    says so.
    """

    def __init__(
        self,
        log: PromotionLog,
        model_name: str,
        *,
        cache_seconds: float = REPORT_CACHE_SECONDS,
    ) -> None:
        self._log = log
        self._model = model_name
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._counts: dict[tuple[str, str], int] | None = None

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        counts = self._read()
        total, up = self._families()
        up.add_metric([], 0.0 if counts is None else 1.0)
        if counts is None:
            return [up]
        shown = {(self._model, "promoted"): 0, (self._model, "refused"): 0, **counts}
        for (model, outcome), n in sorted(shown.items()):
            total.add_metric([model, outcome], float(n))
        return [total, up]

    def _read(self) -> dict[tuple[str, str], int] | None:
        with self._lock:
            if time.monotonic() - self._read_at < self._cache_seconds:
                return self._counts
            try:
                self._counts = self._log.counts()
            except Exception as exc:  # a scrape must not fail because the log cannot be read
                log.warning("automatic promotion counts not exported: %s", exc)
                self._counts = None
            self._read_at = time.monotonic()
            return self._counts

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(
                "lifecycle_automatic_promotions",
                "Retrained candidates the retrain pipeline put through the gates, by model and "
                f"outcome ({', '.join(OUTCOMES)}).",
                labels=["model", "outcome"],
            ),
            GaugeMetricFamily(
                "lifecycle_automatic_promotions_up",
                "1 when the automatic promotion log was read at the last scrape, else 0.",
            ),
        )


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

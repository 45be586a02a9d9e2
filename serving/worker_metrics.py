"""The Celery worker's own Prometheus endpoint: its runtime's metrics plus task outcomes.

The worker has no web server, so prometheus-client's own serves the registry of the runtime's
`Metrics` (model served, swaps, prediction store, predictions) with the task metrics added to
it. Task outcomes come from Celery's task_prerun/task_postrun signals, which keeps the
tasks themselves down to serialisation and retries.

One registry per process: this describes the threads and solo pools, where every task runs in
the worker process. Prefork children each build their own runtime, which this endpoint
cannot see (docs/async.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from typing import Any
from wsgiref.simple_server import WSGIServer

from celery import Celery
from celery.signals import task_postrun, task_prerun
from prometheus_client import CollectorRegistry, start_http_server

from serving.metrics import TaskMetrics

log = logging.getLogger(__name__)

# Celery's states, named as the outcome of one run.
OUTCOMES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}


class TaskObserver:
    """Counts and times one app's tasks from Celery's process-wide signals.

    The signals fire for every app in the process, so only this app's tasks are counted.
    """

    def __init__(self, app: Celery, task_names: Collection[str], metrics: TaskMetrics) -> None:
        self.app = app
        self.task_names = frozenset(task_names)
        self.metrics = metrics
        # Start times per thread, as a stack: a task runs wholly in one thread between its
        # prerun and postrun, and an eager retry runs the same task id inside the first run.
        self._local = threading.local()
        self._uid = f"lifecycle-task-metrics-{id(self)}"

    def connect(self) -> None:
        task_prerun.connect(self._prerun, weak=False, dispatch_uid=self._uid)
        task_postrun.connect(self._postrun, weak=False, dispatch_uid=self._uid)

    def disconnect(self) -> None:
        task_prerun.disconnect(self._prerun, dispatch_uid=self._uid)
        task_postrun.disconnect(self._postrun, dispatch_uid=self._uid)

    def _ours(self, task: Any) -> bool:
        name = getattr(task, "name", None)
        return getattr(task, "app", None) is self.app and name in self.task_names

    def _started(self) -> list[float]:
        stack: list[float] | None = getattr(self._local, "started", None)
        if stack is None:
            stack = self._local.started = []
        return stack

    def _prerun(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender):
            self._started().append(time.perf_counter())

    def _postrun(self, sender: Any = None, state: str | None = None, **_: Any) -> None:
        started = self._started()
        if not started or not self._ours(sender):
            return
        outcome = OUTCOMES.get(str(state), str(state).lower())
        self.metrics.observe_task(sender.name, outcome, time.perf_counter() - started.pop())


class MetricsServer:
    """prometheus-client's HTTP server on a registry, stoppable with the worker."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Serve; a port already taken (a second worker on the host) is logged, not fatal."""
        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.host, registry=self.registry
            )
        except OSError as exc:
            log.warning(
                "worker metrics not served: cannot bind %s:%d (%s); set "
                "LIFECYCLE_WORKER_METRICS_PORT to a free port, or 0",
                self.host,
                self.port,
                exc,
            )
            return False
        log.info("worker metrics on http://%s:%d/metrics", self.host, self.port)
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

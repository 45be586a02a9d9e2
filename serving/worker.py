"""The Celery app, built from settings; tasks only handle serialisation and retries.

Reliability comes from the configuration: `acks_late` with `reject_on_worker_lost` (a killed
worker's tasks go back to the queue), a prefetch multiplier of 1 (a worker holds no more than
it runs), retries with exponential backoff on transient errors (database, registry, no model
yet), and idempotent storage on request ids that the API assigns before sending, so a
redelivered task never stores a prediction twice.

The same app object is the API's client (`send_task`, `AsyncResult`) and the worker
(`lifecycle worker`). Nothing here connects or loads a model at import.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from celery import Celery, bootsteps, current_task, states
from kombu.transport import sqlalchemy as kombu_sqla

from lifecycle.core.errors import TrackingUnavailable
from lifecycle.core.settings import Settings
from lifecycle.core.store import StoreUnavailable
from lifecycle.core.store.report_index import ReportIndexUnavailable
from reports.window import ReportRequest
from serving import batch_files, result_backend
from serving.async_scoring import TRANSIENT, storable_failures
from serving.metrics import TaskMetrics
from serving.micro_batch import Outcome, Pending, ScoringBatcher
from serving.result_backend import StateWrite
from serving.runtime import ModelUnavailable
from serving.score_strategy import Observe
from serving.task_ids import TaskLedger
from serving.wiring import RuntimeCell
from serving.worker_metrics import MetricsServer, TaskObserver

log = logging.getLogger(__name__)

SCORE_TASK = "lifecycle.score"
SCORE_FILE_TASK = "lifecycle.score_file"
REPORT_TASK = "lifecycle.report"
TASKS = (SCORE_TASK, SCORE_FILE_TASK, REPORT_TASK)
# A report retries only what may pass: the tracking server, the store or the index being down.
REPORT_TRANSIENT: tuple[type[Exception], ...] = (
    TrackingUnavailable,
    StoreUnavailable,
    ReportIndexUnavailable,
)
POOLS = ("threads", "solo", "prefork")
# One-row scoring tasks spend most of their time waiting for the shared batch (group commit,
# serving/micro_batch.py), and a batch can only be as large as the tasks running at once: a
# threads-pool worker runs this many threads per slot, while file and report tasks still run
# at most one per slot (LifecycleCelery.heavy_slots).
SCORE_THREADS_PER_SLOT = 8


class LifecycleCelery(Celery):
    """A Celery app that carries its settings and a per-process scoring runtime."""

    lifecycle_settings: Settings
    runtime_cell: RuntimeCell
    score_batcher: ScoringBatcher
    states_with_batch: bool
    heavy_slots: threading.BoundedSemaphore
    task_ledger: TaskLedger
    # Counts a task run that Celery's signals do not see (score_strategy.Observe), when the
    # worker serves its metrics.
    observe_task: Observe | None = None

    def send_task(self, name: str, *args: Any, **options: Any) -> Any:
        # Recorded before it is sent, so GET /tasks/{id} answers 404 only for an id never
        # sent; a task re-sending itself (a retry) was recorded when it was first sent.
        task_id = options.get("task_id")
        if task_id and name in TASKS and not _is_retry(task_id):
            self.task_ledger.record(task_id, name)
        return super().send_task(name, *args, **options)


def _is_retry(task_id: str) -> bool:
    # current_task is a proxy: falsy outside a task, never None.
    return bool(current_task) and current_task.request.id == task_id


class EmbeddedTransport(kombu_sqla.Transport):
    """kombu's SQLAlchemy transport polling every 0.1 s: its 1 s default dominated latency,
    and its transport options all go to create_engine, so the interval cannot be set there."""

    polling_interval = 0.1


def split_sqla(url: str) -> str | None:
    """The database URL of a `sqla+...` / `sqlalchemy+...` broker URL, else None."""
    prefix, _, rest = url.partition("+")
    return rest if prefix in ("sqla", "sqlalchemy") and "://" in rest else None


def is_amqp(url: str) -> bool:
    return url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def make_celery(settings: Settings) -> LifecycleCelery:
    broker = settings.resolved_broker_url()
    embedded = split_sqla(broker)
    if embedded is not None and embedded.startswith("sqlite:"):
        settings.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    backend = settings.resolved_result_backend()
    database = backend[3:] if backend.startswith("db+") else None
    app = LifecycleCelery(
        "lifecycle",
        broker=embedded or broker,
        backend=f"{result_backend.__name__}:PooledDatabaseBackend" if database else backend,
        set_as_current=False,
    )
    if database:
        app.conf.database_url = database
    app.lifecycle_settings = settings
    app.runtime_cell = RuntimeCell(settings)
    # With the database backend, a scoring batch commits its tasks' SUCCESS states itself,
    # right after their rows: one transaction for the batch instead of one per task.
    app.states_with_batch = database is not None
    app.score_batcher = ScoringBatcher(
        app.runtime_cell.get,
        on_stored=partial(_commit_states, app) if database else None,
    )
    app.heavy_slots = threading.BoundedSemaphore(settings.worker_concurrency)
    app.task_ledger = TaskLedger(settings.resolved_database_url())
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.task_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Only file tasks report "started" (set per task): for one-row tasks the extra state
        # write would cost more than the scoring.
        task_track_started=False,
        worker_prefetch_multiplier=settings.worker_prefetch,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        result_expires=7 * 24 * 3600,
        database_engine_options={"pool_pre_ping": True},
    )
    if embedded is not None:
        app.conf.broker_transport = f"{__name__}:EmbeddedTransport"
    if is_amqp(broker):
        # Publisher confirms: send_task returns only once RabbitMQ holds the message.
        app.conf.broker_transport_options = {"confirm_publish": True}
    _register_tasks(app, settings)
    app.steps["worker"].add(RuntimeStep)
    app.steps["worker"].add(MetricsStep)
    if is_amqp(broker) and settings.amqp_consumer:
        app.steps["worker"].add(PlainAmqpStep)
    return app


def _commit_states(
    app: LifecycleCelery, items: Sequence[Pending], outcomes: Sequence[Outcome]
) -> None:
    """The SUCCESS state of every answered task of a scoring batch, in one transaction.

    Runs after the batch's rows are committed and before its tasks return, so a task is
    still acknowledged only once both are stored; a failure here retries the whole batch
    (the store skips the rows it already holds). Failures are stored by Celery as usual.
    """
    backend = app.backend
    writes: list[StateWrite] = [
        (item.task_id, backend.encode_result(o.answer, states.SUCCESS), states.SUCCESS, None, None)
        for item, o in zip(items, outcomes, strict=True)
        if item.task_id is not None and o.answer is not None
    ]
    if not writes:
        return
    try:
        backend.store_states(writes)
    except Exception as exc:  # the backend's driver-specific errors
        raise StoreUnavailable(f"task states not stored ({type(exc).__name__})") from exc


def _register_tasks(app: LifecycleCelery, settings: Settings) -> None:
    retry: dict[str, Any] = {
        # Not Celery's shared tasks: those join every app finalized later in the process,
        # where a second app's task of the same name would run the first app's callable.
        "shared": False,
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "autoretry_for": TRANSIENT,
        "retry_backoff": 1,
        "retry_backoff_max": int(settings.task_retry_backoff_max),
        "retry_jitter": True,
        "max_retries": settings.task_max_retries,
    }

    # A plain one-row task skips Celery's per-task machinery (serving/score_strategy.py).
    @app.task(name=SCORE_TASK, Strategy="serving.score_strategy:batching", **retry)
    def score(self: Any, request_id: str, body: Any, source: str = "async") -> dict[str, Any]:
        # Tasks running at the same moment share one model call and one store transaction;
        # each returns (and is acknowledged) only once its own rows are committed.
        with storable_failures(request_id):
            answer = app.score_batcher.score(request_id, body, source, str(self.request.id))
        if app.states_with_batch:
            # The batch committed this task's SUCCESS state: Celery need not write it again.
            self.request.ignore_result = True
        return answer

    @app.task(name=SCORE_FILE_TASK, track_started=True, **retry)
    def score_file(
        self: Any, input_path: str, output_path: str | None = None, source: str = "batch"
    ) -> dict[str, Any]:
        task_id = str(self.request.id)
        runtime = app.runtime_cell.get()

        def progress(rows: int) -> None:
            # One result-backend write per chunk; GET /tasks/{id} answers it as progress.
            # Progress is advice: a write that fails must not fail (or retry) the file.
            try:
                self.update_state(state=batch_files.PROGRESS_STATE, meta={"rows": rows})
            except Exception as exc:  # the backend's transport-specific errors
                log.warning("batch %s: progress not recorded: %s", task_id, exc)

        # Every delivery of the job stamps its rows with the time the API accepted it.
        accepted_at = batch_files.accepted_at(self.request)
        with app.heavy_slots:
            return batch_files.score_file(
                runtime,
                task_id,
                input_path,
                output_path,
                source,
                progress=progress,
                accepted_at=accepted_at,
            )

    @app.task(name=REPORT_TASK, track_started=True, **{**retry, "autoretry_for": REPORT_TRANSIENT})
    def report(
        self: Any,
        model: str | None = None,
        version: str | None = None,
        last: int | None = None,
        since: str | None = None,
    ) -> dict[str, Any]:
        # Evidently and the report code load on the first report, not when the API starts.
        from reports.runner import run_report

        with storable_failures(str(self.request.id)):
            # `since` arrives resolved to a time by the API: the window is the one asked for,
            # however long the task waited in the queue.
            request = ReportRequest(
                model_name=model,
                version=version,
                last=last,
                since=datetime.fromisoformat(since) if since else None,
            )
            with app.heavy_slots:
                return run_report(settings, request).to_json()


class RuntimeStep(bootsteps.StartStopStep):
    """Builds the scoring runtime when the worker starts, so the first task finds a model."""

    requires = ("celery.worker.components:Pool",)

    def start(self, worker: Any) -> None:
        app: LifecycleCelery = worker.app
        if _prefork(worker):
            return  # each child builds its own runtime on its first task
        runtime = app.runtime_cell.get()
        try:
            log.info("worker scoring with %s", runtime.model().describe())
        except ModelUnavailable as exc:
            # Not fatal: the reconciler keeps polling and tasks retry until a model is there.
            log.warning("worker started without a model: %s", exc.message)

    def stop(self, worker: Any) -> None:
        worker.app.score_batcher.stop()
        worker.app.runtime_cell.stop()


class MetricsStep(bootsteps.StartStopStep):
    """The worker's own /metrics: its runtime's registry plus task outcomes (docs/async.md)."""

    requires = (RuntimeStep,)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.server: MetricsServer | None = None
        self.observer: TaskObserver | None = None

    def start(self, worker: Any) -> None:
        app: LifecycleCelery = worker.app
        settings = app.lifecycle_settings
        if not settings.worker_metrics_port:
            return
        if _prefork(worker):
            # The parent holds no runtime and each child its own registry: nothing to serve.
            log.info("worker metrics are not served with the prefork pool")
            return
        registry = app.runtime_cell.get().metrics.registry
        self.server = MetricsServer(
            registry, settings.worker_metrics_host, settings.worker_metrics_port
        )
        if self.server.start():
            metrics = TaskMetrics(registry)
            self.observer = TaskObserver(app, TASKS, metrics)
            self.observer.connect()
            app.observe_task = metrics.observe_task

    def stop(self, worker: Any) -> None:
        worker.app.observe_task = None
        if self.observer is not None:
            self.observer.disconnect()
        if self.server is not None:
            self.server.stop()
        self.server = self.observer = None


def _prefork(worker: Any) -> bool:
    return bool(worker.pool_cls.__module__.endswith("prefork"))


class PlainAmqpStep(bootsteps.StartStopStep):
    """The plain-AMQP consumer (serving/amqp.py) as a thread of the worker process."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.consumer: Any = None

    def start(self, worker: Any) -> None:
        from serving.amqp import PlainAmqpConsumer

        app: LifecycleCelery = worker.app
        self.consumer = PlainAmqpConsumer(app.lifecycle_settings, app.runtime_cell.get)
        self.consumer.start()

    def stop(self, worker: Any) -> None:
        if self.consumer is not None:
            self.consumer.stop()


def run_worker(settings: Settings, concurrency: int, pool: str, loglevel: str = "INFO") -> None:
    """`lifecycle worker`: consume the task queue (and the plain-AMQP queue) until stopped."""
    app = make_celery(settings)
    threads = concurrency
    if pool == "threads":
        app.heavy_slots = threading.BoundedSemaphore(concurrency)
        threads = concurrency * SCORE_THREADS_PER_SLOT
    app.worker_main(
        [
            "worker",
            f"--pool={pool}",
            f"--concurrency={threads}",
            f"--loglevel={loglevel}",
            f"--queues={settings.task_queue}",
            f"--hostname=lifecycle-{os.getpid()}@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )

"""The score task's Celery strategy: a plain score task goes from the event loop straight to
the scoring batch, without Celery's per-task machinery.

A strategy is Celery's hook for how a worker turns one task type's messages into work. Celery's
own builds a Request per message, logs it, hands it to a pool thread, traces the run (signals,
state, the "succeeded" log line) and acknowledges it. For a one-row scoring task that is most of
the cost: the pool thread only waits on the shared batch (serving/micro_batch.py), and a worker
ran about 350 one-row tasks/s with its main thread and pool threads holding the GIL longer than
the batch that scored them.

Here the consumer's event loop hands the message to the batch (`ScoringBatcher.score_later`),
and the batch's thread acknowledges it once its rows and its SUCCESS state are committed
(`on_stored`): acknowledged still means stored, and a worker killed before that leaves the
message unacknowledged, so RabbitMQ delivers it again (the store skips the rows it holds).

Messages held by the batch do not count against the worker's prefetch window: while the batch
holds any, the window is wider by up to EXTRA_WINDOW (as Celery widens it for tasks waiting on
their ETA), and it narrows back once the batch holds none. Without that, the batch could never
hold more messages than the worker's threads (16), and one-row throughput was bound by the
round trips of batches of 16 rather than by the work. It widens in steps of WINDOW_STEP and
narrows only when idle because every change of the window is a round trip to the broker on the
event loop (basic.qos): one per message took more of the loop than the messages themselves.

Everything else takes Celery's standard path, unchanged:
- a message the fast path does not cover: a retry, an ETA or countdown, an expiry, a revoked
  id, arguments of another shape;
- a request that failed (bad input) or whose batch failed (the store down, no model): the
  message is handed to the standard handler, which runs the task as before, so the error is
  stored as its FAILURE or retried with backoff;
- a worker without an event loop (the embedded transport), a prefork pool (the model lives in
  the children), or a result backend the batch does not write (`states_with_batch`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.worker.strategy import default

from serving.micro_batch import Outcome, Pending

log = logging.getLogger(__name__)

# Messages the batch may hold beyond the prefetch window: the batch's size, as for the plain
# AMQP consumer's window (serving/amqp.py).
EXTRA_WINDOW = 128
WINDOW_STEP = 32
# Task metrics of the fast path: (task name, outcome, seconds). Set by the worker's metrics
# step when it serves them, so these runs are counted as Celery's traced ones are.
Observe = Callable[[str, str, float], None]


def batching(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Callable[..., Any]:
    """Celery's `Task.Strategy` for the score task (serving/worker.py)."""
    standard = default(task, app, consumer, **kwargs)
    if (
        consumer.hub is None
        or type(consumer.pool).__module__.endswith("prefork")
        or not getattr(app, "states_with_batch", False)
    ):
        return standard
    return FastScores(app, task.name, consumer, standard).handle


class FastScores:
    def __init__(self, app: Any, name: str, consumer: Any, standard: Callable[..., Any]) -> None:
        self._app = app
        self._name = name
        self._consumer = consumer
        self._hub = consumer.hub
        self._lock = threading.Lock()
        # The window's widening on the current connection's QoS (a new one after a
        # reconnection, at the configured width), and the messages the batch holds under it.
        self._qos: Any = None
        self._extra = 0
        self._held = 0
        self._revoked = consumer.controller.state.revoked
        self._errors = consumer.connection_errors
        self._standard = standard

    def handle(
        self, message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **_: Any
    ) -> None:
        item = self._plain(message)
        if item is None:
            self._standard(message, body, ack, reject, callbacks)
            return
        qos = self._consumer.qos
        self._hold(qos)

        def done(outcome: Outcome | None, failure: BaseException | None) -> None:
            # In the batch's thread: `ack` is Celery's, which writes the frame from the loop.
            if failure is None and outcome is not None and outcome.answer is not None:
                ack(log, self._errors)
                self._observe(time.perf_counter() - item.started)
            else:
                self._hub.call_soon(self._standard, message, body, ack, reject, callbacks)
            self._release(qos)

        self._app.score_batcher.score_later(item, done)

    def _hold(self, qos: Any) -> None:
        with self._lock:
            if qos is not self._qos:
                self._qos, self._extra, self._held = qos, 0, 0
            self._held += 1
            widen = self._held > self._extra and self._extra < EXTRA_WINDOW
            if widen:
                self._extra += WINDOW_STEP
        if widen:
            # Applied by the event loop before it reads the next message (qos.update).
            qos.increment_eventually(WINDOW_STEP)

    def _release(self, qos: Any) -> None:
        with self._lock:
            if qos is not self._qos:
                return  # a message of an earlier connection: its window is gone
            self._held -= 1
            narrow = self._extra if self._held == 0 else 0
            self._extra -= narrow
        if narrow:
            qos.decrement_eventually(narrow)

    def _plain(self, message: Any) -> Pending | None:
        """The request of a first delivery with the score task's arguments, else None."""
        headers = message.headers or {}
        task_id = headers.get("id")
        if (
            not isinstance(task_id, str)
            or headers.get("retries")
            or headers.get("eta")
            or headers.get("expires")
            or task_id in self._revoked
        ):
            return None
        try:
            args, kwargs, _ = message.decode()
        except Exception:  # the standard path reports what is wrong with the message
            return None
        if kwargs or not isinstance(args, list) or not 2 <= len(args) <= 3:
            return None
        request_id, body, *rest = args
        source = rest[0] if rest else "async"
        if not isinstance(request_id, str) or not isinstance(source, str):
            return None
        return Pending(request_id, body, source, task_id=task_id)

    def _observe(self, seconds: float) -> None:
        observe: Observe | None = getattr(self._app, "observe_task", None)
        if observe is not None:
            observe(self._name, "succeeded", seconds)

"""The plain-AMQP interface, for producers that are not Python (schema: docs/async.md).

A JSON message on the durable `prediction_requests` queue is scored like a /predict body and
the result is published to the `prediction_results` topic exchange (routing key
`prediction.result`, errors `prediction.error`) and, when the message has `reply_to`, to that
queue, always with the request's `correlation_id`. A message that cannot be scored (not JSON,
invalid features) is published to the dead-letter queue with the reason in its headers and
acknowledged: it never crashes the consumer and is never requeued. Transient failures (database,
registry) are retried in place with backoff, then dead-lettered too.

Messages are consumed with a prefetch window and scored in batches (serving/micro_batch.py):
the valid messages that arrived within a few milliseconds of each other, up to `BATCH_MESSAGES`,
share one model call and one store transaction; each keeps its own request id, result and
error. A message is acknowledged only after its prediction is stored and its result published,
so a killed worker's messages are redelivered; the store skips request ids it already holds.
A batch is acknowledged with one `basic.ack` (multiple) once every message of it is answered.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Exchange, Producer, Queue
from kombu.message import Message
from kombu.mixins import ConsumerMixin

from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from serving.async_scoring import TRANSIENT, TaskFailed, printable
from serving.micro_batch import Outcome, Pending, score_many
from serving.wiring import Runtime

log = logging.getLogger(__name__)

RESULT_KEY = "prediction.result"
ERROR_KEY = "prediction.error"
REASON_HEADER = "x-lifecycle-error"
# A batch is at most this many messages (the prefetch window is this times the prefetch
# setting) and waits at most BATCH_WAIT seconds after its first message for more.
BATCH_MESSAGES = 128
BATCH_WAIT = 0.005


class MalformedMessage(LifecycleError):
    status_code = 400


def parse_message(body: bytes | str, properties: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The request id and the /predict body of one message; MalformedMessage says why not."""
    from serving.validation import loads

    raw = body.encode() if isinstance(body, str) else body
    try:
        data = loads(raw)
    except LifecycleError as exc:
        raise MalformedMessage(exc.message) from exc
    if not isinstance(data, dict):
        raise MalformedMessage('message must be a JSON object with "features" or "instances"')
    request_id = data.pop("request_id", None) or properties.get("message_id")
    if request_id is None:
        request_id = uuid.uuid4().hex
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 64:
        raise MalformedMessage("request_id must be a string of 1 to 64 characters")
    return request_id, data


@dataclass(slots=True)
class _Held:
    """A valid message received and not yet answered."""

    message: Message
    props: dict[str, Any]
    item: Pending


class PlainAmqpConsumer(ConsumerMixin):
    def __init__(
        self,
        settings: Settings,
        runtime: Callable[[], Runtime],
        batch_messages: int = BATCH_MESSAGES,
        batch_wait: float = BATCH_WAIT,
    ) -> None:
        self.settings = settings
        self._runtime = runtime
        self.batch_messages = batch_messages
        self.batch_wait = batch_wait
        self.connection = Connection(settings.resolved_broker_url())
        self.requests = Queue(settings.amqp_request_queue, durable=True)
        self.results = Exchange(settings.amqp_result_exchange, type="topic", durable=True)
        self.dead_letter = Queue(settings.amqp_dead_letter_queue, durable=True)
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self._held: list[_Held] = []
        self._deadline = 0.0

    # -- thread ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="plain-amqp", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.should_stop = True
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        # run() reconnects on connection errors; anything else is logged and the loop resumes.
        while not self.should_stop:
            try:
                self.run()
            except Exception:
                log.exception("plain-AMQP consumer stopped; restarting in 2s")
                time.sleep(2)

    # -- kombu -------------------------------------------------------------------------------

    def get_consumers(self, consumer_cls: Any, channel: Any) -> list[Any]:
        # The producer exists before consuming starts: messages already queued are delivered
        # while the consumer is being registered, before on_consume_ready.
        producer_channel = channel.connection.channel()
        self._producer = Producer(producer_channel)
        self.results.declare(channel=producer_channel)
        self.dead_letter.declare(channel=producer_channel)
        return [
            consumer_cls(
                queues=[self.requests],
                on_message=self.handle,
                prefetch_count=self.settings.worker_prefetch * self.batch_messages,
            )
        ]

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kw: Any) -> None:
        log.info(
            "plain-AMQP: consuming %s, results to exchange %s, dead letters to %s",
            self.requests.name,
            self.results.name,
            self.dead_letter.name,
        )

    def consume(
        self,
        limit: int | None = None,
        timeout: float | None = None,
        safety_interval: float = 1,
        **kwargs: Any,
    ) -> Iterator[None]:
        """kombu's loop, except that a held batch bounds the wait for the next message, and
        is answered when its window closes or on a clean stop."""
        with self.consumer_context(**kwargs) as (conn, _channel, _consumers):
            # Delivery tags belong to their channel: whatever a lost connection held is
            # redelivered by the broker, not answered here.
            self._held = []
            while not self.should_stop:
                wait = safety_interval
                if self._held:
                    wait = self._deadline - time.monotonic()
                    if wait <= 0:
                        self._flush()
                        continue
                try:
                    conn.drain_events(timeout=wait)
                except TimeoutError:
                    conn.heartbeat_check()
                except OSError:
                    if not self.should_stop:
                        raise
                yield None
            if self._held:
                self._flush()

    # -- messages ----------------------------------------------------------------------------

    def handle(self, message: Message) -> None:
        props = dict(message.properties)
        request_id: str | None = None
        try:
            request_id, body = parse_message(message.body, props)
        except LifecycleError as exc:
            self._reject(message, props, request_id, exc.message, exc.status_code)
            return
        if not self._held:
            self._deadline = time.monotonic() + self.batch_wait
        self._held.append(_Held(message, props, Pending(request_id, body, "async")))
        if len(self._held) >= self.batch_messages:
            self._flush()

    def _flush(self) -> None:
        held, self._held = self._held, []
        outcomes = self._score(held)
        if outcomes is None:
            return  # stopping: unacknowledged, so the broker redelivers them
        for entry, outcome in zip(held, outcomes, strict=True):
            if outcome.error is not None:
                error = outcome.error
                self._reject(
                    entry.message,
                    entry.props,
                    entry.item.request_id,
                    error.message,
                    error.status_code,
                    ack=False,
                )
            else:
                assert outcome.answer is not None
                self._publish(outcome.answer, RESULT_KEY, entry.props)
        # One acknowledgement for the whole batch. Every message this channel delivered before
        # the batch's last one is either in the batch or was answered (and acknowledged) as it
        # arrived, since batches are answered one at a time on this thread.
        held[-1].message.ack(multiple=True)

    def _score(self, held: list[_Held]) -> list[Outcome] | None:
        """Outcomes once stored; transient failures retried in place for the whole batch,
        then every message fails with the reason. None if the consumer stops meanwhile."""
        items = [entry.item for entry in held]
        attempts = self.settings.task_max_retries + 1
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return score_many(self._runtime(), items)
            except TRANSIENT as exc:
                reason = getattr(exc, "message", str(exc))
                if attempt == attempts:
                    gave_up = LifecycleError(f"gave up after {attempts} attempts: {reason}")
                    return [Outcome(error=gave_up) for _ in items]
                log.warning("plain-AMQP batch of %d: %s; retry in %.1fs", len(items), reason, delay)
                if self._sleep(delay):
                    return None
                delay = min(delay * 2, self.settings.task_retry_backoff_max)
            except Exception as exc:  # the consumer must outlive any bad message
                if len(held) > 1:
                    # Not a transient failure: find the message it belongs to.
                    alone = [self._score([entry]) for entry in held]
                    if any(outcome is None for outcome in alone):
                        return None
                    return [outcome[0] for outcome in alone if outcome is not None]
                log.exception("plain-AMQP message %s failed", items[0].request_id)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                return [Outcome(error=TaskFailed(reason))]
        raise AssertionError("unreachable")

    def _sleep(self, seconds: float) -> bool:
        """Wait, but give up at once when the consumer is told to stop; True if stopping."""
        deadline = time.monotonic() + seconds
        while not self.should_stop and time.monotonic() < deadline:
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))
        return bool(self.should_stop)

    def _reject(
        self,
        message: Message,
        props: dict[str, Any],
        request_id: str | None,
        reason: str,
        status: int,
        ack: bool = True,
    ) -> None:
        # A header is UTF-8 on the wire: a lone surrogate in it would fail every publish.
        reason = printable(reason)
        log.warning("plain-AMQP message dead-lettered: %s", reason)
        assert self._producer is not None
        headers = dict(message.headers or {})
        headers[REASON_HEADER] = reason
        headers["x-lifecycle-source-queue"] = self.requests.name
        self._producer.publish(
            message.body,
            exchange="",
            routing_key=self.dead_letter.name,
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
            headers=headers,
            correlation_id=props.get("correlation_id"),
            message_id=props.get("message_id"),
            delivery_mode=2,
            retry=True,
        )
        error = {"request_id": request_id, "error": reason, "status": status}
        self._publish(error, ERROR_KEY, props)
        if ack:
            message.ack()

    def _publish(self, payload: dict[str, Any], routing_key: str, props: dict[str, Any]) -> None:
        assert self._producer is not None
        body = json.dumps(payload)
        common: dict[str, Any] = {
            "content_type": "application/json",
            "content_encoding": "utf-8",
            "correlation_id": props.get("correlation_id"),
            "delivery_mode": 2,
            "retry": True,
        }
        self._producer.publish(body, exchange=self.results, routing_key=routing_key, **common)
        reply_to = props.get("reply_to")
        if reply_to:
            self._producer.publish(body, exchange="", routing_key=reply_to, **common)

"""The plain-AMQP interface, for producers that are not Python (schema: docs/async.md).

A JSON message on the durable `prediction_requests` queue is scored like a /predict body and
the result is published to the `prediction_results` topic exchange (routing key
`prediction.result`, errors `prediction.error`) and, when the message has `reply_to`, to that
queue, always with the request's `correlation_id`. A message that cannot be scored (not JSON,
invalid features) is published to the dead-letter queue with the reason in its headers and
acknowledged: it never crashes the consumer and is never requeued. Transient failures (database,
registry) are retried in place with backoff, then dead-lettered too.

A message is acknowledged only after its prediction is stored and its result published, so a
killed worker's messages are redelivered; the store skips request ids it already holds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kombu import Connection, Exchange, Producer, Queue
from kombu.message import Message
from kombu.mixins import ConsumerMixin

from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from serving.async_scoring import TRANSIENT, printable, score_request
from serving.wiring import Runtime

log = logging.getLogger(__name__)

RESULT_KEY = "prediction.result"
ERROR_KEY = "prediction.error"
REASON_HEADER = "x-lifecycle-error"


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


class PlainAmqpConsumer(ConsumerMixin):
    def __init__(self, settings: Settings, runtime: Callable[[], Runtime]) -> None:
        self.settings = settings
        self._runtime = runtime
        self.connection = Connection(settings.resolved_broker_url())
        self.requests = Queue(settings.amqp_request_queue, durable=True)
        self.results = Exchange(settings.amqp_result_exchange, type="topic", durable=True)
        self.dead_letter = Queue(settings.amqp_dead_letter_queue, durable=True)
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None

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
        return [
            consumer_cls(
                queues=[self.requests],
                on_message=self.handle,
                prefetch_count=self.settings.worker_prefetch,
            )
        ]

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kw: Any) -> None:
        producer_channel = connection.channel()
        self._producer = Producer(producer_channel)
        self.results.declare(channel=producer_channel)
        self.dead_letter.declare(channel=producer_channel)
        log.info(
            "plain-AMQP: consuming %s, results to exchange %s, dead letters to %s",
            self.requests.name,
            self.results.name,
            self.dead_letter.name,
        )

    # -- messages ----------------------------------------------------------------------------

    def handle(self, message: Message) -> None:
        props = dict(message.properties)
        request_id: str | None = None
        try:
            request_id, body = parse_message(message.body, props)
            result = self._score(request_id, body)
        except LifecycleError as exc:
            self._reject(message, props, request_id, exc.message, exc.status_code)
            return
        except Exception as exc:  # the consumer must outlive any bad message
            log.exception("plain-AMQP message %s failed", request_id)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            self._reject(message, props, request_id, reason, 500)
            return
        self._publish(result, RESULT_KEY, props)
        message.ack()

    def _score(self, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
        attempts = self.settings.task_max_retries + 1
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return score_request(self._runtime(), request_id, body, "async")
            except TRANSIENT as exc:
                if attempt == attempts:
                    raise LifecycleError(
                        f"gave up after {attempts} attempts: {getattr(exc, 'message', exc)}"
                    ) from exc
                log.warning("plain-AMQP %s: %s; retry in %.1fs", request_id, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.settings.task_retry_backoff_max)
        raise AssertionError("unreachable")

    def _reject(
        self,
        message: Message,
        props: dict[str, Any],
        request_id: str | None,
        reason: str,
        status: int,
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

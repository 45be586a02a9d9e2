"""MLflow registry webhooks: HMAC verification with stale-timestamp and replay rejection.

MLflow signs `f"{delivery_id}.{timestamp}.{payload}"` with HMAC-SHA256 and sends
`X-MLflow-Signature: v1,<base64>`, `X-MLflow-Delivery-Id` and `X-MLflow-Timestamp` (Unix
seconds). Delivery ids seen within the tolerance window are remembered in the application
database, so a replay is rejected whichever uvicorn worker or API replica it reaches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import sqlalchemy as sa

from lifecycle.core.errors import LifecycleError
from lifecycle.core.store.tables import dialect_insert, make_engine

SIGNATURE = "x-mlflow-signature"
DELIVERY_ID = "x-mlflow-delivery-id"
TIMESTAMP = "x-mlflow-timestamp"
VERSION = "v1"


class Unauthorized(LifecycleError):
    status_code = 401


class Forbidden(LifecycleError):
    status_code = 403


class DeliveryLogUnavailable(LifecycleError):
    status_code = 503


class DeliveryLog(Protocol):
    def first_time(self, delivery_id: str, now: float, keep_until: float) -> bool:
        """Record `delivery_id` until `keep_until`; False if it was already recorded."""
        ...


class MemoryDeliveryLog:
    """One process's memory: enough for a single worker and for tests."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, now: float, keep_until: float) -> bool:
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = keep_until
            return True


_deliveries = sa.Table(
    "webhook_deliveries",
    sa.MetaData(),
    sa.Column("delivery_id", sa.String(255), primary_key=True),
    sa.Column("keep_until", sa.Float, nullable=False, index=True),
)


class SqlDeliveryLog:
    """Delivery ids in the application database, shared by every worker and replica: the
    insert either claims the id or finds it taken, atomically."""

    def __init__(self, database_url: str) -> None:
        self._engine = make_engine(database_url)
        self._insert = (
            dialect_insert(self._engine, _deliveries)
            .on_conflict_do_nothing(index_elements=["delivery_id"])
            .returning(_deliveries.c.delivery_id)
        )
        self._created = False

    def first_time(self, delivery_id: str, now: float, keep_until: float) -> bool:
        try:
            if not self._created:
                _deliveries.metadata.create_all(self._engine, checkfirst=True)
                self._created = True
            with self._engine.begin() as conn:
                conn.execute(sa.delete(_deliveries).where(_deliveries.c.keep_until <= now))
                claimed = conn.execute(
                    self._insert, {"delivery_id": delivery_id, "keep_until": keep_until}
                ).first()
        except sa.exc.SQLAlchemyError as exc:
            # Without the log a replay cannot be told apart: refuse, MLflow delivers again.
            raise DeliveryLogUnavailable(
                f"webhook not accepted: delivery log unavailable ({type(exc).__name__})"
            ) from exc
        return claimed is not None


def sign(secret: str, delivery_id: str, timestamp: str, payload: str) -> str:
    """The header value MLflow sends; used by tests and by `make bench` to drive swaps."""
    content = f"{delivery_id}.{timestamp}.{payload}".encode()
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode()}"


class WebhookVerifier:
    def __init__(
        self,
        secret: str,
        deliveries: DeliveryLog | None = None,
        tolerance: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._deliveries = deliveries or MemoryDeliveryLog()
        self._tolerance = tolerance
        self._clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        signature = headers.get(SIGNATURE)
        delivery_id = headers.get(DELIVERY_ID)
        timestamp = headers.get(TIMESTAMP)
        missing = [
            name
            for name, value in (
                ("X-MLflow-Signature", signature),
                ("X-MLflow-Delivery-Id", delivery_id),
                ("X-MLflow-Timestamp", timestamp),
            )
            if not value
        ]
        if missing:
            raise Unauthorized(f"webhook rejected: missing header(s) {', '.join(missing)}")
        assert signature is not None and delivery_id is not None and timestamp is not None
        try:
            sent = int(timestamp)
        except ValueError as exc:
            raise Forbidden("webhook rejected: X-MLflow-Timestamp is not Unix seconds") from exc
        now = self._clock()
        if abs(now - sent) > self._tolerance:
            raise Forbidden(
                f"webhook rejected: timestamp is {abs(now - sent):.0f}s away from now "
                f"(tolerance {self._tolerance:.0f}s)"
            )
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Forbidden("webhook rejected: body is not UTF-8") from exc
        expected = sign(self._secret, delivery_id, timestamp, payload)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise Forbidden("webhook rejected: signature does not match")
        if not self._deliveries.first_time(delivery_id, now, now + 2 * self._tolerance):
            raise Forbidden(f"webhook rejected: delivery {delivery_id} was already received")


def is_alias_event(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("entity") == "model_version_alias"

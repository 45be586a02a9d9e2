"""MLflow registry webhooks: HMAC verification with stale-timestamp and replay rejection.

MLflow signs `f"{delivery_id}.{timestamp}.{payload}"` with HMAC-SHA256 and sends
`X-MLflow-Signature: v1,<base64>`, `X-MLflow-Delivery-Id` and `X-MLflow-Timestamp` (Unix
seconds). Delivery ids seen within the tolerance window are remembered per process: a
replay landing on another worker can at most cause one extra reconcile, which is harmless.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Mapping

from lifecycle.errors import LifecycleError

SIGNATURE = "x-mlflow-signature"
DELIVERY_ID = "x-mlflow-delivery-id"
TIMESTAMP = "x-mlflow-timestamp"
VERSION = "v1"


class Unauthorized(LifecycleError):
    status_code = 401


class Forbidden(LifecycleError):
    status_code = 403


def sign(secret: str, delivery_id: str, timestamp: str, payload: str) -> str:
    """The header value MLflow sends; used by tests and by `make bench` to drive swaps."""
    content = f"{delivery_id}.{timestamp}.{payload}".encode()
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode()}"


class WebhookVerifier:
    def __init__(
        self, secret: str, tolerance: float = 300.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret
        self._tolerance = tolerance
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

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
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
            if delivery_id in self._seen:
                raise Forbidden(f"webhook rejected: delivery {delivery_id} was already received")
            self._seen[delivery_id] = now + 2 * self._tolerance


def is_alias_event(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("entity") == "model_version_alias"

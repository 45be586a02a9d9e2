"""Async scoring as plain functions: the Celery tasks and the plain-AMQP consumer only add
transport, serialisation and retries around them.

Everything scores through the same `ModelHolder` (following the registry through the same
`Reconciler`), the same validator and `serving.inference.infer` as the REST API, and stores
through `PredictionStore.write`, which is synchronous and idempotent on request id: a
redelivered task recomputes its rows and the store skips those it already holds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lifecycle.core.store import StoreUnavailable
from serving import validation
from serving.inference import InferenceRequest, infer
from serving.runtime import ModelUnavailable, RegistryUnavailable
from serving.wiring import Runtime

log = logging.getLogger(__name__)

# Worth retrying with backoff: the database, the registry, or no model loaded yet.
TRANSIENT: tuple[type[Exception], ...] = (StoreUnavailable, RegistryUnavailable, ModelUnavailable)


def score_request(
    runtime: Runtime, request_id: str, body: Any, source: str = "async"
) -> dict[str, Any]:
    """Score a /predict body, store every row, and answer like /predict does."""
    started = time.perf_counter()
    model = runtime.model()
    rows = validation.parse_predict(body, model.schema, runtime.settings.max_batch_rows)
    result = infer(model, InferenceRequest(rows, request_id, source, started=started))
    runtime.store.write(result.records)
    runtime.observe(result)
    return result.answer()

"""Async scoring as plain functions: the Celery tasks and the plain-AMQP consumer only add
transport, serialisation and retries around them.

Everything scores through the same `ModelHolder` (following the registry through the same
`Reconciler`), the same validator and `serving.inference.infer` as the REST API, and stores
through `PredictionStore.write`, which is synchronous and idempotent on request id: a
redelivered task recomputes its rows and the store skips those it already holds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lifecycle.core.errors import LifecycleError
from lifecycle.core.store import StoreUnavailable
from serving import validation
from serving.inference import InferenceRequest, infer
from serving.runtime import ModelUnavailable, RegistryUnavailable
from serving.validation import replace_surrogates
from serving.wiring import Runtime

log = logging.getLogger(__name__)

# Worth retrying with backoff: the database, the registry, or no model loaded yet.
TRANSIENT: tuple[type[Exception], ...] = (StoreUnavailable, RegistryUnavailable, ModelUnavailable)
# A failure is one line a client reads in GET /tasks/{id}, not a dump of the input.
MAX_ERROR_CHARS = 2000


class TaskFailed(LifecycleError):
    """An unexpected failure, worded as one storable line (the original is in the log)."""

    status_code = 500


def score_request(
    runtime: Runtime, request_id: str, body: Any, source: str = "async"
) -> dict[str, Any]:
    """Score a /predict body, store every row, and answer like /predict does."""
    with storable_failures(request_id):
        started = time.perf_counter()
        model = runtime.model()
        rows = validation.parse_predict(body, model.schema, runtime.settings.max_batch_rows)
        result = infer(model, InferenceRequest(rows, request_id, source, started=started))
        runtime.store.write(result.records)
        runtime.observe(result)
        return result.answer()


@contextmanager
def storable_failures(task_id: str) -> Iterator[None]:
    """Every failure leaves as a `LifecycleError` whose only argument is clean text.

    The result backend stores a failure as JSON in a database: a lone surrogate in the message
    (a path or a value echoed back), or arguments JSON cannot carry, made that write fail, and
    the task stayed "started" forever. The chained cause is dropped for the same reason: the
    stored traceback would repeat its message.
    """
    try:
        yield
    except LifecycleError as exc:
        exc.message = printable(exc.message)
        exc.args = (exc.message,)
        raise exc from None
    except Exception as exc:
        log.exception("task %s failed unexpectedly", printable(task_id))
        raise TaskFailed(printable(f"internal error: {type(exc).__name__}: {exc}")) from None


def printable(text: str) -> str:
    """`text` as one bounded line of valid UTF-8."""
    clean = replace_surrogates(text)
    if len(clean) > MAX_ERROR_CHARS:
        clean = clean[: MAX_ERROR_CHARS - 1] + "…"
    return clean


def plain_json(value: Any) -> Any:
    """`value` as strict JSON can carry it: NaN and infinities become null, strings valid.
    (A result stored before non-finite outputs were refused must still be readable.)"""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return replace_surrogates(value)
    if isinstance(value, dict):
        return {replace_surrogates(str(k)): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    return value

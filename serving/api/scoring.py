"""What `/predict` and `/invocations` do with a request body, whatever carried it.

The FastAPI routes (`serving.api.routes`, which also document the two operations in the
OpenAPI schema) and the raw ASGI fast path (`serving.api.fast`) both call these functions, so
the two transports cannot drift apart: same checks in the same order, same records, same
answer bytes. Each function raises `LifecycleError` for a request it refuses; the caller maps
it to the endpoint's error shape (`serving.api.errors`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from serving import bodies, validation
from serving.api.deps import Services
from serving.inference import Inference, InferenceRequest, infer
from serving.runtime import LoadedModel

RawHeaders = tuple[tuple[bytes, bytes], ...]


@dataclass(slots=True)
class Answer:
    """A scored request's 200 answer: the JSON body and the model headers (raw, lower-case).

    Not frozen: a frozen dataclass pays for `object.__setattr__` per field, on every request.
    """

    body: bytes
    headers: RawHeaders


# Starlette's `JSONResponse` settings. One encoder for every request: `json.dumps` with
# anything but its defaults builds a new encoder per call, which costs more than the encoding.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


def render(content: Any) -> bytes:
    """JSON exactly as Starlette's `JSONResponse` renders it, byte for byte."""
    return _ENCODER.encode(content).encode("utf-8")


def render_predictions(predictions: list[Any]) -> bytes:
    """`render({"predictions": predictions})`; one integer class, the usual single-row
    answer, is formatted directly (`%d` writes an int as JSON does; bool, its subclass, is
    not an int here)."""
    if len(predictions) == 1 and type(predictions[0]) is int:
        return b'{"predictions":[%d]}' % predictions[0]
    return render({"predictions": predictions})


def predict(
    services: Services, body: bytes, request_id: str, started: float, recheck: bool = True
) -> Answer:
    settings = services.settings
    parsed = validation.loads(body)
    model = services.holder.get()
    rows = validation.parse_predict(parsed, model.schema, settings.max_batch_rows)
    result = score(services, model, rows, request_id, started, recheck)
    return Answer(render(result.answer()), model.raw_headers)


def invocations(
    services: Services,
    mime: str,
    body: bytes,
    request_id: str,
    started: float,
    recheck: bool = True,
) -> Answer:
    model = services.holder.get()
    rows = bodies.invocation_rows(mime, body, model.schema, services.settings.max_batch_rows)
    result = score(services, model, rows, request_id, started, recheck, probabilities=False)
    return Answer(render_predictions(result.predictions), model.raw_headers)


def score(
    services: Services,
    model: LoadedModel,
    rows: validation.Rows,
    request_id: str,
    started: float,
    recheck: bool = True,
    probabilities: bool = True,
) -> Inference:
    """Checked rows → `infer` → records handed to the store; the caller shapes the answer.
    `recheck`: False when the server generated the request id (PredictionRecord.recheck);
    `probabilities`: False when the answer has no per-row probabilities."""
    request = InferenceRequest(
        rows,
        request_id,
        "rest",
        started=started,
        recheck=recheck,
        columnar=True,
        answer_probabilities=probabilities,
    )
    result = infer(model, request)
    store = services.store
    if store is not None:
        # All rows or none, before anything is answered or counted: a saturated log refuses
        # the request (503) rather than answer predictions it could not keep.
        if result.columns is not None:
            store.submit_columns(result.columns)
        else:
            store.submit_many(result.records)
    services.metrics.observe_predictions(result.model, result.labels)
    return result

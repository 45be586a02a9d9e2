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

RawHeaders = list[tuple[bytes, bytes]]


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
    return Answer(render(result.answer()), model_headers(model))


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
    result = score(services, model, rows, request_id, started, recheck)
    return Answer(render_predictions(result.predictions), model_headers(model))


def score(
    services: Services,
    model: LoadedModel,
    rows: validation.Rows,
    request_id: str,
    started: float,
    recheck: bool = True,
) -> Inference:
    """Checked rows → `infer` → records handed to the store; the caller shapes the answer.
    `recheck`: False when the server generated the request id (PredictionRecord.recheck)."""
    request = InferenceRequest(rows, request_id, "rest", started=started, recheck=recheck)
    result = infer(model, request)
    store = services.store
    if store is not None:
        # All rows or none, before anything is answered or counted: a saturated log refuses
        # the request (503) rather than answer predictions it could not keep.
        store.submit_many(result.records)
    services.metrics.observe_predictions(result.model, result.labels)
    return result


def model_headers(model: LoadedModel) -> RawHeaders:
    """The X-Model-* headers as Starlette encodes a header dict: lower-case, latin-1.

    The same for every request a model snapshot answers, so the last snapshot's are kept (one
    tuple, replaced whole: a request racing a swap at worst encodes them again). Callers copy
    the list rather than extend it.
    """
    last = _last_headers
    if last is not None and last[0] is model:
        return last[1]
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in model_header_items(model)
    ]
    _remember_headers((model, headers))
    return headers


_last_headers: tuple[LoadedModel, RawHeaders] | None = None


def _remember_headers(entry: tuple[LoadedModel, RawHeaders]) -> None:
    global _last_headers
    _last_headers = entry


def model_header_items(model: LoadedModel) -> list[tuple[str, str]]:
    items = [("X-Model-Name", model.name), ("X-Model-Version", model.version)]
    if model.stage:
        items.append(("X-Model-Stage", model.stage))
    if model.alias:
        items.append(("X-Model-Alias", model.alias))
    if model.run_id:
        items.append(("X-Model-Run-Id", model.run_id))
    return items

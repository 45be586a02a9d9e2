"""The one place where a request becomes scored records: `infer(model, request)`.

REST `/predict` and `/invocations`, Celery tasks, the plain-AMQP consumer and batch files all
parse their input with `serving.validation` into `Rows`, call `infer`, and then only translate
the `Inference` back into their own answer and hand its records to the store (queued on the
request path, written synchronously by tasks). MLServer's `DataPlane.infer` is the model: one
entry point, thin transports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from lifecycle.core.store import PredictionRecord
from lifecycle.core.store.columns import PredictionColumns
from serving.runtime import LoadedModel
from serving.validation import InvalidInput, Rows


@dataclass(slots=True)
class InferenceRequest:
    """Checked rows and where they came from (not frozen: a frozen dataclass pays for
    `object.__setattr__` per field, on every request).

    `row_ids` defaults to the request id for one row and `<request id>-<i>` for a batch (the
    ids /feedback takes). `started` is when the transport received the request, so the stored
    latency covers parsing too; `per_row` divides it among the rows (a file chunk). `offset`
    is the first row's number in its file, so an error names the row as the file counts it.
    `recheck` goes to every record (PredictionRecord.recheck): False only for a request id
    the server generated, which no other copy of these rows can carry. `columnar`: a batch
    with the default ids is logged as one PredictionColumns (`Inference.columns`, stored as
    a chunk row) instead of a record per row.
    """

    rows: Rows
    request_id: str
    source: str
    row_ids: Sequence[str] | None = None
    started: float = field(default_factory=time.perf_counter)
    per_row: bool = False
    offset: int = 0
    recheck: bool = True
    columnar: bool = False
    # False: the answer has no per-row probabilities (/invocations), so a columnar batch
    # builds none (the log takes them from the matrix).
    answer_probabilities: bool = True


@dataclass(slots=True)
class Inference:
    """What one request scored to: the model snapshot, per-row answers and what to log: store
    records, or (a columnar request's batch) `columns` and no record."""

    model: LoadedModel
    request: InferenceRequest
    ids: list[str]
    predictions: list[Any]
    labels: list[str]
    probabilities: list[dict[str, float]] | None
    at: datetime
    records: list[PredictionRecord]
    columns: PredictionColumns | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def answer(self) -> dict[str, Any]:
        """The /predict answer, the same from REST, an async task and plain AMQP."""
        items = [
            {
                "prediction": self.predictions[i],
                "label": self.labels[i],
                "probabilities": self.probabilities[i] if self.probabilities else None,
            }
            for i in range(len(self))
        ]
        content: dict[str, Any] = {
            "request_id": self.request.request_id,
            "timestamp": self.at.isoformat(),
        }
        if self.request.rows.batch:
            content["predictions"] = [
                {"request_id": self.ids[i], **item} for i, item in enumerate(items)
            ]
        else:
            content.update(items[0])
        content["model"] = self.model.describe()
        return content


def infer(model: LoadedModel, request: InferenceRequest) -> Inference:
    rows = request.rows
    n = len(rows)
    predicted, probs = model.predictor.predict(rows.X)
    predicted = native(np.asarray(predicted))
    _check_finite(request, predicted, probs)
    predictions = [_plain(p) for p in predicted.tolist()]
    labels = [model.label_of(p) for p in predictions]
    columnar = request.columnar and request.row_ids is None and n > 1
    probabilities = None
    names: list[str] = []
    if probs is not None:
        names = [model.label_of(_plain(c)) for c in model.predictor.classes]
        if request.answer_probabilities or not columnar:
            probabilities = [dict(zip(names, r, strict=True)) for r in probs.tolist()]
    ids = list(request.row_ids) if request.row_ids is not None else row_ids(request.request_id, n)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} row ids for {n} rows")
    at = datetime.now(UTC)
    latency_ms = (time.perf_counter() - request.started) * 1000
    if request.per_row:
        latency_ms /= max(n, 1)
    if columnar:
        columns = PredictionColumns(
            request_ids=ids,
            created_at=at,
            source=request.source,
            model_name=model.name,
            model_version=model.version,
            run_id=model.run_id,
            feature_names=tuple(model.schema.names),
            features=rows.X,
            predictions=np.asarray(predicted),
            labels=labels,
            class_labels=None if probs is None else tuple(names),
            probabilities=None if probs is None else np.asarray(probs, dtype=np.float64),
            latency_ms=latency_ms,
            recheck=request.recheck,
            numbered=(f"{request.request_id}-", 0),
        )
        inference = Inference(model, request, ids, predictions, labels, probabilities, at, [])
        inference.columns = columns
        return inference
    features = rows.feature_dicts(model.schema.names)
    records = [
        PredictionRecord(
            request_id=ids[i],
            created_at=at,
            source=request.source,
            model_name=model.name,
            model_version=model.version,
            run_id=model.run_id,
            features=features[i],
            prediction=predictions[i],
            label=labels[i],
            probabilities=probabilities[i] if probabilities else None,
            latency_ms=latency_ms,
            recheck=request.recheck,
        )
        for i in range(n)
    ]
    return Inference(model, request, ids, predictions, labels, probabilities, at, records)


def _check_finite(request: InferenceRequest, predicted: np.ndarray, probs: Any) -> None:
    """Finite features can still overflow a model (1e308 → NaN probabilities). Such a row has
    no answer: refuse the request before any record exists, as the validator would."""
    if _few_finite(predicted, probs):
        return
    bad = _not_finite(predicted)
    if probs is not None:
        bad |= ~np.isfinite(np.asarray(probs, dtype=float)).all(axis=1)
    if not bad.any():
        return
    first = int(np.argmax(bad))
    where = f"row {request.offset + first}" if request.rows.batch else "features"
    raise InvalidInput(
        f"{where}: the model's output is not a finite number for these features (they are "
        "probably far outside the range it was trained on); send smaller values"
    )


# Up to this many rows the check runs on Python floats: numpy's reductions release the GIL
# even on a handful of values, and on a busy server each release can wait behind the store's
# writer thread for its switch interval.
_FEW_ROWS = 16


def _few_finite(predicted: np.ndarray, probs: Any) -> bool:
    """True when a small output is all finite; False means "ask the numpy check"."""
    if len(predicted) > _FEW_ROWS or predicted.ndim != 1:
        return False
    kind = predicted.dtype.kind
    if kind == "f":
        if not all(math.isfinite(v) for v in predicted.tolist()):
            return False
    elif kind == "O":
        if any(isinstance(v, float) and not math.isfinite(v) for v in predicted.tolist()):
            return False
    elif kind not in "iub" and kind not in "USV":
        return False
    if probs is None:
        return True
    if not isinstance(probs, np.ndarray) or probs.dtype.kind != "f" or probs.ndim != 2:
        return False
    return all(math.isfinite(p) for row in probs.tolist() for p in row)


def _not_finite(predicted: np.ndarray) -> np.ndarray:
    values = np.asarray(predicted)
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    values = values.reshape(len(values), -1)
    if values.dtype.kind in "fc":
        return ~np.isfinite(values).all(axis=1)
    if values.dtype.kind != "O":
        return np.zeros(len(values), dtype=bool)  # labels, integers, booleans: always finite
    return np.array(
        [any(isinstance(v, float) and not math.isfinite(v) for v in row) for row in values],
        dtype=bool,
    )


def native(predicted: np.ndarray) -> np.ndarray:
    """Classes held as Python objects (a pipeline's `predict`) as a numpy array of their own
    type, when they share one: the same values, checked and counted without a loop per row."""
    if predicted.dtype != object or predicted.ndim != 1 or not len(predicted):
        return predicted
    values = predicted.tolist()
    kinds = set(map(type, values))
    if len(kinds) != 1 or not kinds <= {int, float, str, bool}:
        return predicted
    return np.array(values)


def row_ids(request_id: str, n: int) -> list[str]:
    """One row keeps the request id; row i of a batch is `<request id>-<i>` (for /feedback)."""
    return [request_id] if n == 1 else [f"{request_id}-{i}" for i in range(n)]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value

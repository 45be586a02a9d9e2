"""A file chunk scored in columnar form: `infer`'s work without a Python object per row.

`serving.inference.infer` answers requests: per-row answers and one PredictionRecord per row.
A batch file chunk needs neither; it needs the predictions as columns for the output file and
for the prediction log (PredictionColumns). The model call, the output check and the labels are
the same as `infer`'s, so a file row and a /predict row score alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from lifecycle.core.store.columns import PredictionColumns
from serving.inference import InferenceRequest, _check_finite, native
from serving.runtime import LoadedModel
from serving.validation import Rows


@dataclass(frozen=True)
class ScoredChunk:
    columns: PredictionColumns
    # The highest class probability of each row (NaN without probabilities): the output's
    # `probability` column.
    probability: np.ndarray


def row_prefix(task_id: str) -> str:
    """What a file job's request ids start with, before the row number."""
    return f"{task_id}-"


def row_ids(task_id: str, offset: int, n: int) -> Any:
    """`<task id>-<row number>` for rows offset .. offset + n - 1, as an Arrow string array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = pc.cast(pa.array(np.arange(offset, offset + n, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(pa.scalar(row_prefix(task_id)), numbers, pa.scalar(""))


def infer_columns(
    model: LoadedModel,
    rows: Rows,
    ids: Any,
    source: str,
    started: float,
    offset: int,
    accepted_at: datetime | None = None,
    numbered: tuple[str, int] | None = None,
) -> ScoredChunk:
    """Score checked rows in one call; `started` is when the chunk was read, so the stored
    latency (per row, as for every file row) covers parsing too. With `accepted_at` (the file
    job's accepted time) the rows are stamped with it, so every delivery of the job stores
    the same created_at and the key alone keeps them once (PredictionRecord.recheck);
    without it, with the time of scoring, looked up. `numbered` is the ids' (prefix, first
    row) when they are numbered (PredictionColumns.numbered)."""
    request = InferenceRequest(rows, "", source, started=started, per_row=True, offset=offset)
    predicted, probs = model.predictor.predict(rows.X)
    predicted = native(np.asarray(predicted))
    _check_finite(request, predicted, probs)
    n = len(rows)
    labels = _labels(model, predicted)
    class_labels = None
    matrix = None
    if probs is not None:
        class_labels = tuple(model.label_of(_plain(c)) for c in model.predictor.classes)
        matrix = np.asarray(probs, dtype=np.float64).reshape(n, len(class_labels))
    at = accepted_at or datetime.now(UTC)
    latency_ms = (time.perf_counter() - started) * 1000 / max(n, 1)
    columns = PredictionColumns(
        request_ids=ids,
        created_at=at,
        source=source,
        model_name=model.name,
        model_version=model.version,
        run_id=model.run_id,
        feature_names=tuple(model.schema.names),
        features=rows.X,
        predictions=predicted,
        labels=labels,
        class_labels=class_labels,
        probabilities=matrix,
        latency_ms=latency_ms,
        recheck=accepted_at is None,
        numbered=numbered,
    )
    best = matrix.max(axis=1) if matrix is not None and n else np.full(n, np.nan)
    return ScoredChunk(columns, best)


def label_counts(labels: np.ndarray) -> dict[str, int]:
    """How many rows got each label (the predictions counter, one increment per label)."""
    names, counts = np.unique(labels, return_counts=True)
    return {str(name): int(count) for name, count in zip(names, counts, strict=True)}


def _labels(model: LoadedModel, predicted: np.ndarray) -> np.ndarray:
    """`model.label_of` each prediction, once per distinct class."""
    try:
        uniques, inverse = np.unique(predicted, return_inverse=True)
    except TypeError:
        return np.array([model.label_of(_plain(p)) for p in predicted.tolist()], dtype=object)
    names = np.array([model.label_of(u) for u in uniques.tolist()], dtype=object)
    return names[inverse.reshape(-1)]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value

"""Predictions in columnar form: one array per column instead of one record per row.

A batch file scores a chunk of rows in one call; the chunk's predictions share their time,
source, model and latency, and their features, classes and probabilities are matrices. Kept as
columns, they reach the prediction log without a Python object per row: PostgreSQL's bulk path
builds its COPY text from them (copy.py), and `records()` gives the same predictions as
PredictionRecord rows for the INSERT path (SQLite) and for a batch the database rejects.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from lifecycle.core.store.tables import PredictionRecord, as_utc


@dataclass(frozen=True)
class PredictionColumns:
    """`n` predictions of one model made at one time.

    `features` is an n x len(feature_names) float matrix (NaN: a missing value), `predictions`
    the model's n raw outputs, `labels` their class labels, `probabilities` an
    n x len(class_labels) matrix or None. Every row gets the same `created_at` and `latency_ms`,
    as the rows of one scored chunk do, and the same `recheck` (PredictionRecord.recheck).
    """

    request_ids: Sequence[str]
    created_at: datetime
    source: str
    model_name: str
    model_version: str
    run_id: str | None
    feature_names: tuple[str, ...]
    features: np.ndarray
    predictions: np.ndarray
    labels: Sequence[str] | np.ndarray
    class_labels: tuple[str, ...] | None
    probabilities: np.ndarray | None
    latency_ms: float
    recheck: bool = True
    # (prefix, first): request id i is `prefix` followed by first + i (a file job's rows), so
    # PostgreSQL stores the batch as one row of `prediction_chunks` (chunks.py). None: rows.
    numbered: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        n = len(self.request_ids)
        shapes = {
            "features": self.features.shape == (n, len(self.feature_names)),
            "predictions": len(self.predictions) == n,
            "labels": len(self.labels) == n,
            "probabilities": self.probabilities is None
            or (
                self.class_labels is not None
                and self.probabilities.shape == (n, len(self.class_labels))
            ),
        }
        wrong = [name for name, ok in shapes.items() if not ok]
        if wrong:
            raise ValueError(f"{n} request ids but {', '.join(wrong)} of another shape")

    def __len__(self) -> int:
        return len(self.request_ids)

    def to_json_line(self) -> bytes:
        """The batch as one spool line, `{"chunk": {...}}` (read back by `from_row`)."""
        chunk = {
            "request_ids": [str(i) for i in self.request_ids],
            "created_at": as_utc(self.created_at).isoformat(),
            "source": self.source,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "feature_names": list(self.feature_names),
            "features": self.features.tolist(),
            "predictions": [_plain(p) for p in self.predictions.tolist()],
            "labels": [str(label) for label in self.labels],
            "class_labels": None if self.class_labels is None else list(self.class_labels),
            "probabilities": None if self.probabilities is None else self.probabilities.tolist(),
            "latency_ms": float(self.latency_ms),
            "recheck": self.recheck,
            "numbered": None if self.numbered is None else list(self.numbered),
        }
        # NaN and infinities (missing features) become null, read back as NaN.
        return orjson.dumps({CHUNK_KEY: chunk}, default=_plain) + b"\n"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PredictionColumns:
        """A spool line's batch (`to_json_line`); KeyError, TypeError or ValueError when the
        line is not one."""
        c = row[CHUNK_KEY]
        features = np.array(c["features"], dtype=float) if c["features"] else np.empty((0, 0))
        probabilities = c["probabilities"]
        numbered = c["numbered"]
        return cls(
            request_ids=list(c["request_ids"]),
            created_at=as_utc(datetime.fromisoformat(c["created_at"])),
            source=c["source"],
            model_name=c["model_name"],
            model_version=c["model_version"],
            run_id=c["run_id"],
            feature_names=tuple(c["feature_names"]),
            features=features.reshape(len(c["request_ids"]), len(c["feature_names"])),
            predictions=_array(c["predictions"]),
            labels=list(c["labels"]),
            class_labels=None if c["class_labels"] is None else tuple(c["class_labels"]),
            probabilities=None if probabilities is None else np.array(probabilities, dtype=float),
            latency_ms=float(c["latency_ms"]),
            recheck=bool(c["recheck"]),
            numbered=None if numbered is None else (str(numbered[0]), int(numbered[1])),
        )

    def records(self) -> list[PredictionRecord]:
        """The same predictions as the records `serving.inference.infer` builds row by row."""
        created = as_utc(self.created_at)
        features = [dict(zip(self.feature_names, r, strict=True)) for r in self.features.tolist()]
        predictions = [_plain(p) for p in self.predictions.tolist()]
        probabilities: list[dict[str, float] | None]
        if self.probabilities is None or self.class_labels is None:
            probabilities = [None] * len(self)
        else:
            names = self.class_labels
            probabilities = [dict(zip(names, r, strict=True)) for r in self.probabilities.tolist()]
        return [
            PredictionRecord(
                request_id=str(request_id),
                created_at=created,
                source=self.source,
                model_name=self.model_name,
                model_version=self.model_version,
                run_id=self.run_id,
                features=features[i],
                prediction=predictions[i],
                label=str(self.labels[i]),
                probabilities=probabilities[i],
                latency_ms=self.latency_ms,
                recheck=self.recheck,
            )
            for i, request_id in enumerate(self.request_ids)
        ]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _array(values: list[Any]) -> np.ndarray:
    """Model outputs read back: one array of their own type, or of objects when mixed."""
    kinds = set(map(type, values))
    if len(kinds) == 1 and kinds <= {int, float, str, bool}:
        return np.array(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# The key of a spool line holding a batch (PredictionColumns), not a record.
CHUNK_KEY = "chunk"


# What the writer's queue and the spool carry: one record, or one request's rows as a batch.
Logged = PredictionRecord | PredictionColumns


def rows_in(items: Sequence[Logged]) -> int:
    """How many predictions `items` hold."""
    return sum(len(item) if isinstance(item, PredictionColumns) else 1 for item in items)


class RowQueue(queue.Queue[Logged]):
    """A queue bounded in predictions, not items: a batch counts its rows (`qsize()`, `full()`
    and `maxsize` are in rows; a batch may take the last places and go past by its size)."""

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self._rows = 0

    def _qsize(self) -> int:
        return self._rows

    def _put(self, item: Logged) -> None:
        super()._put(item)
        self._rows += rows_in([item])

    def _get(self) -> Logged:
        item: Logged = super()._get()
        self._rows -= rows_in([item])
        return item

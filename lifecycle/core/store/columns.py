"""Predictions in columnar form: one array per column instead of one record per row.

A batch file scores a chunk of rows in one call; the chunk's predictions share their time,
source, model and latency, and their features, classes and probabilities are matrices. Kept as
columns, they reach the prediction log without a Python object per row: PostgreSQL's bulk path
builds its COPY text from them (copy.py), and `records()` gives the same predictions as
PredictionRecord rows for the INSERT path (SQLite) and for a batch the database rejects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

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

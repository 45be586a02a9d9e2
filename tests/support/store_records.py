"""Prediction records and a counting StoreObserver shared by the prediction store tests."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np

from lifecycle.core.store import PredictionRecord
from lifecycle.core.store.columns import PredictionColumns

LABELS = ("setosa", "versicolor", "virginica")


def make_record(
    i: int,
    *,
    source: str = "rest",
    model_name: str = "iris-classifier",
    version: str = "1",
    label: str | None = None,
    request_id: str | None = None,
) -> PredictionRecord:
    label = label if label is not None else LABELS[i % 3]
    probabilities: dict[str, float] = {name: 0.1 for name in LABELS}
    probabilities[label] = 0.8
    return PredictionRecord(
        request_id=request_id or f"req-{i:06d}-{uuid.uuid4().hex[:8]}",
        created_at=datetime.now(UTC),
        source=source,
        model_name=model_name,
        model_version=version,
        run_id="0123456789abcdef",
        features={
            "sepal_length": 5.1 + i % 7 / 10,
            "sepal_width": 3.5,
            "petal_length": 1.4,
            "petal_width": 0.2,
        },
        prediction=LABELS.index(label),
        label=label,
        probabilities=probabilities,
        latency_ms=0.25 + i % 5,
    )


class CountingObserver:
    """A real StoreObserver that keeps totals, as the Prometheus one keeps counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: Counter[str] = Counter()
        self.depths: list[int] = []

    def _add(self, name: str, n: int) -> None:
        with self._lock:
            self.totals[name] += n

    def queue_depth(self, depth: int) -> None:
        with self._lock:
            self.depths.append(depth)

    def written(self, n: int) -> None:
        self._add("written", n)

    def spooled(self, n: int) -> None:
        self._add("spooled", n)

    def replayed(self, n: int) -> None:
        self._add("replayed", n)

    def dropped(self, n: int) -> None:
        self._add("dropped", n)

    def shed(self, n: int) -> None:
        self._add("shed", n)

    def __getitem__(self, name: str) -> Any:
        with self._lock:
            return self.totals[name]


def make_batch(i: int, n: int = 5) -> PredictionColumns:
    """One REST request's `n` rows as the API logs them: one batch with numbered ids
    (`<request id>-<k>`), stored as a chunk row on PostgreSQL."""
    rows = [make_record(i * n + k) for k in range(n)]
    names = tuple(rows[0].features)
    prefix = f"batch-{i:06d}-{uuid.uuid4().hex[:8]}-"
    return PredictionColumns(
        request_ids=[f"{prefix}{k}" for k in range(n)],
        created_at=datetime.now(UTC),
        source="rest",
        model_name="iris-classifier",
        model_version="1",
        run_id="0123456789abcdef",
        feature_names=names,
        features=np.array([[r.features[name] for name in names] for r in rows]),
        predictions=np.array([r.prediction for r in rows]),
        labels=[str(r.label) for r in rows],
        class_labels=LABELS,
        probabilities=np.array(
            [[(r.probabilities or {})[label] for label in LABELS] for r in rows]
        ),
        latency_ms=0.5,
        recheck=False,
        numbered=(prefix, 0),
    )

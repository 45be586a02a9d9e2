"""Prediction records and a counting StoreObserver shared by the prediction store tests."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from lifecycle.core.store import PredictionRecord

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

"""The prediction store's lookups and feedback: the calls the API and tests make by request id.

A base of `PredictionStore` (writer.py), kept apart from the write path; windows and
aggregates for reports and the UI are in read.py.
"""

from __future__ import annotations

import time

from lifecycle.core.errors import NotFound
from lifecycle.core.store.database import PredictionDatabase
from lifecycle.core.store.tables import PredictionRecord


class StoreLookups:
    _db: PredictionDatabase
    _flush_interval: float

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until this process's queued rows are in the database (the writer's)."""
        raise NotImplementedError

    def get(self, request_id: str) -> PredictionRecord | None:
        return self._db.get(request_id)

    def recent(self, limit: int = 100, source: str | None = None) -> list[PredictionRecord]:
        """The latest predictions, newest first."""
        return self._db.recent(limit, source)

    def count(self, source: str | None = None) -> int:
        return self._db.count(source)

    def add_feedback(self, request_id: str, label: str, *, timeout: float = 5.0) -> None:
        """Record the true label of a prediction; the last feedback for an id wins.

        The prediction may still sit in this process's queue, so it is flushed first; one made
        by another worker process reaches the database within its flush interval, hence the
        short grace wait before NotFound.
        """
        if not self._db.exists(request_id):
            self.flush(timeout)
            deadline = time.monotonic() + min(2 * self._flush_interval + 0.1, timeout)
            while not self._db.exists(request_id):
                if time.monotonic() >= deadline:
                    raise NotFound(f"no prediction with request id {request_id!r}")
                time.sleep(0.02)
        self._db.set_feedback(request_id, label)

    def feedback_label(self, request_id: str) -> str | None:
        return self._db.feedback_label(request_id)

    def feedback_stats(self, model_name: str) -> dict[str, dict[str, float]]:
        """Per version: n, accuracy and macro precision of predicted vs feedback labels."""
        return self._db.feedback_stats(model_name)

"""The prediction store's database access: schema creation, idempotent inserts, queries.

Every failure that means "the database is not there" becomes StoreUnavailable (HTTP 503), so
callers can tell an outage, which they spool or retry, from a bad row, which they drop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lifecycle.core.errors import LifecycleError
from lifecycle.core.store.copy import copy_insert, copy_supported
from lifecycle.core.store.tables import (
    PredictionRecord,
    classification_stats,
    feedback,
    feedback_counts,
    insert_predictions,
    make_engine,
    max_rows_per_insert,
    metadata,
    predictions,
    upsert_feedback,
)

log = logging.getLogger("lifecycle.core.store")


class StoreUnavailable(LifecycleError):
    """The prediction database cannot be reached."""

    status_code = 503


_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


def is_unavailable(exc: BaseException) -> bool:
    """Errors that say "the database is not there", as opposed to "this row is bad"."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's first line, without the SQL and the row values SQLAlchemy appends."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def _short(exc: Exception) -> str:
    return _reason(exc) if isinstance(exc, sa.exc.SQLAlchemyError) else str(exc)


def raise_unavailable(exc: sa.exc.SQLAlchemyError) -> None:
    if is_unavailable(exc):
        raise StoreUnavailable(f"prediction database unavailable: {_reason(exc)}") from exc


class PredictionDatabase:
    def __init__(self, database_url: str, on_rejected: Callable[[int], None]) -> None:
        self.engine: Engine = make_engine(database_url)
        self.max_rows_per_insert = max_rows_per_insert(self.engine)
        self._insert_stmt = insert_predictions(self.engine)
        # PostgreSQL through psycopg2 loads batches with COPY (copy.py); one row, and SQLite,
        # keep the INSERT.
        self._copy = copy_supported(self.engine)
        self._on_rejected = on_rejected
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def dispose(self) -> None:
        self.engine.dispose()

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            for attempt in range(3):
                try:
                    metadata.create_all(self.engine)
                    break
                except sa.exc.SQLAlchemyError as exc:
                    raise_unavailable(exc)
                    # Two processes creating the tables at once: the loser retries and finds them.
                    if attempt == 2:
                        raise
                    time.sleep(0.1)
            self._schema_ready = True

    def _connect(self) -> Connection:
        self.ensure_schema()
        try:
            return self.engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise_unavailable(exc)
            raise

    def insert(self, records: Sequence[PredictionRecord]) -> int:
        """Insert one batch, skipping stored request ids; return how many rows were new.

        A batch the database rejects as data is retried row by row so that one bad row cannot
        block the rest; the bad rows are dropped, logged and reported to on_rejected.
        """
        rows = [r.to_row() for r in records]
        try:
            return self._execute_insert(rows)
        except StoreUnavailable:
            raise
        except (sa.exc.SQLAlchemyError, TypeError, ValueError) as exc:
            log.error("prediction batch rejected (%s); inserting row by row", _short(exc))
        inserted = 0
        for record, row in zip(records, rows, strict=True):
            try:
                inserted += self._execute_insert([row])
            except StoreUnavailable:
                raise
            except (sa.exc.SQLAlchemyError, TypeError, ValueError) as exc:
                log.error(
                    "prediction %s rejected by the database, dropped: %s",
                    record.request_id,
                    _short(exc),
                )
                self._on_rejected(1)
        return inserted

    def _execute_insert(self, rows: list[dict[str, Any]]) -> int:
        try:
            with self._connect() as conn, conn.begin():
                if self._copy and len(rows) > 1:
                    return copy_insert(conn, rows)
                return len(conn.execute(self._insert_stmt, rows).all())
        except sa.exc.SQLAlchemyError as exc:
            raise_unavailable(exc)
            raise

    def _read(self, stmt: sa.Executable) -> list[Any]:
        try:
            with self._connect() as conn:
                return list(conn.execute(stmt))
        except sa.exc.SQLAlchemyError as exc:
            raise_unavailable(exc)
            raise

    def get(self, request_id: str) -> PredictionRecord | None:
        rows = self._read(sa.select(predictions).where(predictions.c.request_id == request_id))
        return PredictionRecord.from_row(rows[0]._mapping) if rows else None

    def exists(self, request_id: str) -> bool:
        stmt = sa.select(predictions.c.request_id).where(predictions.c.request_id == request_id)
        return bool(self._read(stmt))

    def recent(self, limit: int, source: str | None) -> list[PredictionRecord]:
        stmt = sa.select(predictions).order_by(predictions.c.created_at.desc()).limit(limit)
        if source is not None:
            stmt = stmt.where(predictions.c.source == source)
        return [PredictionRecord.from_row(row._mapping) for row in self._read(stmt)]

    def count(self, source: str | None) -> int:
        stmt = sa.select(sa.func.count()).select_from(predictions)
        if source is not None:
            stmt = stmt.where(predictions.c.source == source)
        return int(self._read(stmt)[0][0])

    def set_feedback(self, request_id: str, label: str) -> None:
        try:
            with self._connect() as conn, conn.begin():
                conn.execute(upsert_feedback(self.engine, request_id, label))
        except sa.exc.SQLAlchemyError as exc:
            raise_unavailable(exc)
            raise

    def feedback_label(self, request_id: str) -> str | None:
        rows = self._read(sa.select(feedback.c.label).where(feedback.c.request_id == request_id))
        return str(rows[0][0]) if rows else None

    def feedback_stats(self, model_name: str) -> dict[str, dict[str, float]]:
        counts = [
            (str(v), str(p), str(t), int(n))
            for v, p, t, n in self._read(feedback_counts(model_name))
        ]
        return classification_stats(counts)

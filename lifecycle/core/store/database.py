"""The prediction store's database access: schema creation, idempotent inserts, queries.

Every failure that means "the database is not there" becomes StoreUnavailable (HTTP 503), so
callers can tell an outage, which they spool or retry, from a bad row, which they drop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lifecycle.core.errors import LifecycleError
from lifecycle.core.store import chunks, migrate
from lifecycle.core.store.chunks import as_record
from lifecycle.core.store.chunks import lookup as chunk_lookup
from lifecycle.core.store.columns import Logged, PredictionColumns
from lifecycle.core.store.copy import copy_columns, copy_insert, copy_supported
from lifecycle.core.store.copy_text import NotColumnar
from lifecycle.core.store.partitions import PARENTS, days_ahead, ensure_day_partitions
from lifecycle.core.store.prune import Pruned, prune
from lifecycle.core.store.queries import per_table
from lifecycle.core.store.staged import staged_insert
from lifecycle.core.store.tables import (
    PredictionRecord,
    classification_stats,
    dedup_bounds,
    ensure_read_indexes,
    feedback,
    feedback_counts,
    insert_keyed_prediction,
    insert_predictions,
    make_engine,
    max_rows_per_insert,
    prediction_values,
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


# The retention runs at most this often per process (maintain()).
RETENTION_EVERY = timedelta(hours=1)


class PredictionDatabase:
    def __init__(
        self,
        database_url: str,
        on_rejected: Callable[[int], None],
        *,
        retention: timedelta | None = None,
        chunks: bool = True,
    ) -> None:
        self.engine: Engine = make_engine(database_url)
        self.retention = retention
        # Partitions (PostgreSQL) exist up to this day; the next retention run is due then.
        self._partitions_until: date | None = None
        self._next_retention: datetime | None = None
        self.max_rows_per_insert = max_rows_per_insert(self.engine)
        self._insert_stmt = insert_predictions(self.engine)
        self._insert_keyed = insert_keyed_prediction()
        # PostgreSQL through psycopg2 loads batches with COPY (copy.py); one row, and SQLite,
        # keep the INSERT.
        self._copy = copy_supported(self.engine)
        self._postgresql = self.engine.dialect.name == "postgresql"
        # Numbered columnar batches as one row per chunk (chunks.py): the prediction_chunks
        # setting. Reads and lookups cover chunk rows whatever it says.
        self._chunks = chunks and self._postgresql
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
                    migrate.upgrade(self.engine)
                    with self.engine.begin() as conn:
                        ensure_read_indexes(conn)
                    break
                except sa.exc.SQLAlchemyError as exc:
                    raise_unavailable(exc)
                    # SQLite has no advisory lock: two processes creating the tables at once,
                    # the loser retries and finds them.
                    if attempt == 2:
                        raise
                    time.sleep(0.1)
            self._ensure_partitions(datetime.now(UTC))
            self._schema_ready = True

    def maintain(self, now: datetime | None = None) -> Pruned | None:
        """Housekeeping for the writer thread to call now and then (every few seconds is
        fine: it does nothing until something is due). PostgreSQL: creates the day
        partitions of today and the days ahead once a day. Both: applies the retention, at
        most once an hour per process (on PostgreSQL one process at a time). Returns what the
        retention removed when it ran. Raises StoreUnavailable when the database is down."""
        now = now or datetime.now(UTC)
        self.ensure_schema()
        self._ensure_partitions(now)
        if self.retention is None:
            return None
        if self._next_retention is not None and now < self._next_retention:
            return None
        self._next_retention = now + RETENTION_EVERY
        result = self.prune(now - self.retention)
        if not result.skipped and (result.partitions or result.rows_deleted):
            log.info("prediction retention: %s", "; ".join(result.describe()))
        return result

    def prune(self, cutoff: datetime) -> Pruned:
        """Remove predictions older than `cutoff` (and their feedback): prune.py."""
        try:
            with self._connect() as conn, conn.begin():
                return prune(conn, cutoff)
        except sa.exc.SQLAlchemyError as exc:
            raise_unavailable(exc)
            raise

    def _ensure_partitions(self, now: datetime) -> None:
        if self.engine.dialect.name != "postgresql":
            return
        days = days_ahead(now)
        if self._partitions_until is not None and self._partitions_until >= days[-1]:
            return
        try:
            with self.engine.begin() as conn:
                # Processes starting at once take turns; the second finds the partitions.
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": migrate.SCHEMA_LOCK}
                )
                created = [
                    name for parent in PARENTS for name in ensure_day_partitions(conn, days, parent)
                ]
        except sa.exc.SQLAlchemyError as exc:
            raise_unavailable(exc)
            # A lock wait that timed out, or another process creating the same partition:
            # rows go to the default partition meanwhile, and the next call tries again.
            log.warning("prediction partitions not created now: %s", _short(exc))
            return
        if created:
            log.info("prediction partitions created: %s", ", ".join(created))
        self._partitions_until = days[-1]

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
        recheck = [r.recheck for r in records]
        try:
            return self._execute_insert(rows, recheck)
        except StoreUnavailable:
            raise
        except (sa.exc.SQLAlchemyError, TypeError, ValueError) as exc:
            log.error("prediction batch rejected (%s); inserting row by row", _short(exc))
        inserted = 0
        for record, row in zip(records, rows, strict=True):
            try:
                inserted += self._execute_insert([row], [record.recheck])
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

    def _execute_insert(self, rows: list[dict[str, Any]], recheck: list[bool]) -> int:
        try:
            with self._connect() as conn, conn.begin():
                if self._copy and len(rows) > 1:
                    return copy_insert(conn, rows, recheck)
                if self._postgresql:
                    if len(rows) > 1:
                        return staged_insert(conn, rows, recheck)
                    if not recheck[0]:
                        return len(conn.execute(self._insert_keyed, rows).all())
                    rows = [{**rows[0], **dedup_bounds(rows[0]["created_at"])}]
                # SQLite: the request id is the key, so `recheck` changes nothing there.
                return len(conn.execute(self._insert_stmt, rows).all())
        except sa.exc.SQLAlchemyError as exc:
            raise_unavailable(exc)
            raise

    def insert_columns(self, batch: PredictionColumns) -> int:
        """`insert` for a columnar batch, in one transaction: on PostgreSQL, with `chunks`, a
        batch of numbered request ids is one row of `prediction_chunks` (chunks.py); another
        batch's COPY text is built from the columns (copy.py `copy_columns`). SQLite, a batch the
        columnar text does not cover, and a batch the database rejects as data take `insert`
        with its records (which drops a bad row alone); an outage raises StoreUnavailable."""
        if self._chunks and batch.numbered is not None:
            try:
                with self._connect() as conn, conn.begin():
                    return chunks.insert_chunks(conn, [batch])
            except NotColumnar as exc:
                log.info("numbered batch stored as rows: %s", exc)
            except sa.exc.SQLAlchemyError as exc:
                raise_unavailable(exc)
                log.error("prediction chunk rejected (%s); inserting its rows", _short(exc))
        if self._copy and len(batch) > 1:
            try:
                with self._connect() as conn, conn.begin():
                    return copy_columns(conn, batch)
            except NotColumnar as exc:
                log.info("columnar batch stored as rows: %s", exc)
            except sa.exc.SQLAlchemyError as exc:
                raise_unavailable(exc)
                log.error("prediction batch rejected (%s); inserting its rows", _short(exc))
        records = batch.records()
        step = self.max_rows_per_insert
        return sum(self.insert(records[i : i + step]) for i in range(0, len(records), step))

    def insert_logged(self, items: Sequence[Logged]) -> int:
        """What the writer's queue and the spool carry: the records in one `insert`, the
        batches (a request's rows) with `insert_chunks`, each stored once however often it
        is written (chunks.py, "Exactly once")."""
        records = [item for item in items if isinstance(item, PredictionRecord)]
        batches = [item for item in items if isinstance(item, PredictionColumns)]
        return (self.insert(records) if records else 0) + (
            self.insert_chunks(batches) if batches else 0
        )

    def insert_chunks(self, batches: Sequence[PredictionColumns]) -> int:
        """Several columnar batches (REST requests of many rows, queued): on PostgreSQL with
        `chunks`, the numbered ones as chunk rows in one statement; the others as records in
        one `insert`, as their rows would have come. When the chunks' statement is rejected
        as data, each batch is stored alone (`insert_columns`), so one bad batch goes alone."""
        numbered = [b for b in batches if b.numbered is not None] if self._chunks else []
        inserted = 0
        if numbered:
            try:
                with self._connect() as conn, conn.begin():
                    inserted = chunks.insert_chunks(conn, numbered)
            except (NotColumnar, sa.exc.SQLAlchemyError) as exc:
                if isinstance(exc, sa.exc.SQLAlchemyError):
                    raise_unavailable(exc)
                log.error("prediction chunks rejected (%s); storing them one by one", _short(exc))
                return sum(self.insert_columns(batch) for batch in batches)
        records = [r for b in batches if not (numbered and b.numbered) for r in b.records()]
        step = self.max_rows_per_insert
        return inserted + sum(
            self.insert(records[i : i + step]) for i in range(0, len(records), step)
        )

    def _read(self, stmt: sa.Executable) -> list[Any]:
        try:
            with self._connect() as conn:
                return list(conn.execute(stmt))
        except sa.exc.SQLAlchemyError as exc:
            raise_unavailable(exc)
            raise

    def get(self, request_id: str) -> PredictionRecord | None:
        rows = self._read(sa.select(predictions).where(predictions.c.request_id == request_id))
        if not rows and self._postgresql:
            in_chunk = chunk_lookup(request_id)
            rows = self._read(in_chunk) if in_chunk is not None else []
        return PredictionRecord.from_row(rows[0]._mapping) if rows else None

    def exists(self, request_id: str) -> bool:
        return self.get(request_id) is not None

    def recent(self, limit: int, source: str | None) -> list[PredictionRecord]:
        p = prediction_values
        stmt = sa.select(p).order_by(p.c.created_at.desc()).limit(limit)
        if source is not None:
            stmt = stmt.where(p.c.source == source)
        return [PredictionRecord.from_row(as_record(row._mapping)) for row in self._read(stmt)]

    def count(self, source: str | None) -> int:
        stmt = sa.select(sa.func.count()).select_from(prediction_values)
        if source is not None:
            stmt = stmt.where(prediction_values.c.source == source)
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
        # Per table, added up (queries.per_table): one statement over the view lost the row
        # table's plan.
        counts = [
            (str(v), str(p), str(t), int(n))
            for stmt in per_table(self.engine.dialect.name, feedback_counts(model_name))
            for v, p, t, n in self._read(stmt)
        ]
        return classification_stats(counts)

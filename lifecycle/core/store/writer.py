"""Prediction store: every prediction and the feedback labels, off the request path.

`submit()` puts a record on a bounded in-memory queue (`submit_columns()`, one request's rows
as one item: chunks.py stores them as one row on PostgreSQL); one writer thread flushes it in
batches (database.py: COPY on PostgreSQL, multi-row INSERT on SQLite, skipping stored request
ids). While the database is down, rows go to an on-disk spool (spool.py) and are replayed in
order, before newer rows, once the database answers again. Rows the queue has no room for go
to the spool through the spiller thread (overflow.py), never on the caller's thread; when
neither can keep a request's rows, `submit_many` refuses it (PredictionLogSaturated, 503) so
that no answered prediction goes unlogged. Policy and failure modes: docs/prediction-store.md.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from lifecycle.core.errors import LifecycleError
from lifecycle.core.store.columns import Logged, PredictionColumns, RowQueue, rows_in
from lifecycle.core.store.database import PredictionDatabase, StoreUnavailable
from lifecycle.core.store.health import (
    DatabaseHealth,
    DropLog,
    SpoolHealth,
    StoreState,
    store_state,
)
from lifecycle.core.store.lookups import StoreLookups
from lifecycle.core.store.observer import NoObserver, StoreObserver
from lifecycle.core.store.overflow import Overflow
from lifecycle.core.store.replay import Replayer
from lifecycle.core.store.spool import Spool
from lifecycle.core.store.tables import PredictionRecord

if TYPE_CHECKING:
    from lifecycle.core.settings import Settings


log = logging.getLogger(__name__)

_ADOPT_EVERY = 30.0
# How often the writer lets the database do its upkeep (maintain(): partitions ahead, the
# retention); maintain() itself does nothing until a task is due.
_MAINTAIN_EVERY = 60.0
# Admission reserves spool space for every admitted row up to this share of the spool's limit:
# the rest is headroom for rows larger than the largest seen, and for requests admitted at the
# same moment, so that what was answered still fits.
_SPOOL_ADMIT_SHARE = 0.9


def _bytes_per_row(items: Sequence[Logged], lines: Sequence[bytes]) -> int:
    """The largest spool line per prediction it holds (a batch's line holds many)."""
    return max(len(line) // rows_in([item]) + 1 for item, line in zip(items, lines, strict=True))


class PredictionLogSaturated(LifecycleError):
    """Neither the writer's queue nor the spool can keep more rows right now."""

    status_code = 503
    retry_after = 1


class PredictionStore(StoreLookups):
    def __init__(
        self,
        database_url: str,
        spool_dir: Path,
        *,
        queue_size: int = 10000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        spool_max_bytes: int = 512 * 1024 * 1024,
        observer: StoreObserver | None = None,
        retention: timedelta | None = None,
        chunks: bool = True,
    ) -> None:
        self._db = PredictionDatabase(
            database_url, on_rejected=self._rejected, retention=retention, chunks=chunks
        )
        self._queue: queue.Queue[Logged] = RowQueue(maxsize=queue_size)
        # At most a queue's worth of rows waits in memory for the spiller; beyond that,
        # requests are refused (submit_many) rather than held up or answered unlogged.
        self._overflow_limit = queue_size
        self._overflow = Overflow(self._to_spool)
        # Rows per multi-row INSERT, within what the dialect can bind in one statement.
        self._rows_per_insert = min(batch_size, self._db.max_rows_per_insert)
        self._flush_interval = flush_interval
        self._spool = Spool(spool_dir, spool_max_bytes)
        # The largest spooled line so far: admission reserves spool space at this size.
        self._row_bytes = 0
        self._observer: StoreObserver = observer or NoObserver()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closed = False
        # Held while rows move to the database or the spool, so that only one thread drains.
        self._io_lock = threading.Lock()
        self._health = DatabaseHealth(self._spool.root)
        self._next_adopt = 0.0
        self._next_maintain = 0.0
        self._spool_health = SpoolHealth(self._spool)
        self._drops = DropLog()
        self._replayer = Replayer(
            self._spool,
            self._db,
            self._health,
            self._rows_per_insert,
            self._observer,
            self._unreadable,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, observer: StoreObserver | None = None
    ) -> PredictionStore:
        if settings.database_url is None:
            # The embedded SQLite file lives in data_dir, which may not exist yet.
            settings.resolved_data_dir().mkdir(parents=True, exist_ok=True)
        return cls(
            settings.resolved_database_url(),
            settings.resolved_spool_dir(),
            queue_size=settings.prediction_queue_size,
            batch_size=settings.prediction_batch_size,
            flush_interval=settings.prediction_flush_interval,
            spool_max_bytes=settings.prediction_spool_max_bytes,
            observer=observer,
            retention=settings.resolved_prediction_retention(),
            chunks=settings.prediction_chunks,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Create the tables if the database answers, adopt leftover spool, start the writer.

        A database that is down at start is not an error: rows spool until it comes back.
        Nor is a spool that cannot be created: rows the database cannot take are then
        dropped and counted (the documented policy), and `state()` says so.
        """
        if self._thread is not None and self._thread.is_alive():
            return
        self._closed = False
        self._stopping.clear()
        self._adopt()
        self._next_adopt = time.monotonic() + _ADOPT_EVERY
        try:
            self._db.ensure_schema()
        except StoreUnavailable as exc:
            self._health.mark_down(exc)
        self._overflow.start()
        self._thread = threading.Thread(
            target=self._run, name="prediction-store-writer", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Drain the queue into the database (or the spool) and stop the writer."""
        thread, self._thread = self._thread, None
        self._closed = True
        if thread is not None:
            self._stopping.set()
            thread.join(timeout)
            if thread.is_alive():
                log.warning(
                    "prediction writer did not stop within %.1fs; spooling the rest", timeout
                )
        # Whatever is still queued or waiting to spill (writer stuck, or never started) is
        # kept on disk.
        self._overflow.stop(timeout)
        self._spool_queue()
        self._drops.log()
        self._spool.close()
        self._db.dispose()

    # -- write path --------------------------------------------------------------------------

    def submit(self, record: PredictionRecord) -> None:
        """Hand a record to the writer; never waits on the database or the disk and never
        raises. A record neither the queue nor the overflow can take is dropped and counted:
        callers that can still refuse their request use `submit_many`."""
        try:
            self._offer([record])
        except Exception:
            log.exception("prediction %s could not be queued or spooled", record.request_id)
            self._drop(1, "could not be queued or spooled")

    def submit_many(self, records: Sequence[PredictionRecord]) -> None:
        """Hand one request's records to the writer, all or none: raises
        PredictionLogSaturated (503, before anything is queued) when the queue is full and
        the overflow or the spool is at its limit, so the caller refuses the request instead
        of answering predictions that could not be logged. Never waits on the database or
        the disk."""
        self._admit(records, len(records))

    def submit_columns(self, batch: PredictionColumns) -> None:
        """`submit_many` for one request's rows as a batch (PredictionColumns): one item on
        the queue, stored as a chunk row where the database keeps them (chunks.py), spooled
        as one line. Raises PredictionLogSaturated as `submit_many` does."""
        self._admit([batch], len(batch))

    def _admit(self, items: Sequence[Logged], n: int) -> None:
        """One request's `n` predictions (`items`), all or none: refused (counted as shed)
        when the log is saturated, else offered; never waits on the database or the disk."""
        if self.saturated(n, items[0] if items else None):
            self._observer.shed(n)
            raise PredictionLogSaturated(
                "the prediction log is saturated (its queue and spool are full); retry shortly"
            )
        try:
            self._offer(items)
        except Exception:
            log.exception("%d prediction(s) could not be queued or spooled", n)
            self._drop(n, "could not be queued or spooled")

    def _queue_has_room(self, n: int) -> bool:
        return self._queue.maxsize - self._queue.qsize() >= n

    def saturated(self, n: int = 1, sample: Logged | None = None) -> bool:
        """Whether `n` more rows (like `sample`) might have nowhere to go: the queue has no
        room for them and the overflow is at its limit or the spool unusable, or the spool
        could not hold every admitted row that is on its way there.

        Spool space is reserved, not just checked: rows in the overflow are on their way to
        the spool, and so are the queued ones while the database is down. A request is
        admitted only if the spool has room for it and for those, at the size of the largest
        row spooled so far (or of `sample`). Checking the spool's size alone admitted a
        burst of rows into the overflow that the spool then could not hold."""
        queue_room = self._queue_has_room(n)
        down = self._health.down
        if queue_room and not down:
            return False
        if not queue_room:
            if len(self._overflow) + n > self._overflow_limit:
                return True
            if self._spool_health.error is not None:
                return True
        if sample is not None and not self._row_bytes:
            self._row_bytes = _bytes_per_row([sample], [sample.to_json_line()])
        # Rows: the queue's count is in rows (RowQueue), the writer's unfinished items are a
        # floor for those it holds.
        queued = max(self._queue.qsize(), self._queue.unfinished_tasks)
        waiting = len(self._overflow) + n + (queued if down else 0)
        reserved = self._spool.pending_bytes + waiting * self._row_bytes
        return reserved >= self._spool.max_bytes * _SPOOL_ADMIT_SHARE

    def _offer(self, records: Sequence[Logged]) -> None:
        # Before start() or after stop() no spiller runs: rows spool on this thread (the few
        # requests still finishing at shutdown, or a store used without its writer).
        spiller_down = self._closed or not self._overflow.running
        if spiller_down and (self._closed or not self._queue_has_room(rows_in(records))):
            self._observer.queue_depth(self._queue.qsize())
            self._to_spool(records)
            return
        for i, record in enumerate(records):
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                rest = records[i:]
                if len(self._overflow) + rows_in(rest) > 2 * self._overflow_limit:
                    # Only `submit`, which cannot refuse, gets here: bounded memory wins.
                    self._drop(rows_in(rest), "the queue and the overflow were full")
                else:
                    self._overflow.put(rest)
                self._observer.queue_depth(self._queue.qsize() + len(self._overflow))
                return

    def write(self, records: Sequence[PredictionRecord]) -> int:
        """Store records now; return how many were new. Raises StoreUnavailable when the
        database is down, so a Celery task can retry; request ids already stored are skipped."""
        inserted = 0
        for start in range(0, len(records), self._rows_per_insert):
            chunk = records[start : start + self._rows_per_insert]
            inserted += self._db.insert(chunk)
            self._observer.written(len(chunk))
        return inserted

    def write_columns(self, batch: PredictionColumns) -> int:
        """`write` for predictions in columnar form (a scored file chunk), stored in one
        transaction on PostgreSQL; the same guarantees and errors as `write`."""
        inserted = self._db.insert_columns(batch)
        self._observer.written(len(batch))
        return inserted

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until queue and spool are in the database; True if they are."""
        deadline = time.monotonic() + timeout
        next_nudge = 0.0
        while True:
            now = time.monotonic()
            if now >= next_nudge:
                # The caller wants the rows now: skip the rest of the backoff once in a while.
                self._health.nudge()
                next_nudge = now + 0.5
            thread = self._thread
            if thread is None or not thread.is_alive():
                with self._io_lock:
                    self._cycle(wait=0.0)
            if self._drained():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _drained(self) -> bool:
        with self._queue.mutex:
            unfinished = self._queue.unfinished_tasks
        return unfinished == 0 and len(self._overflow) == 0 and self._spool.empty()

    # -- writer ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = self._take(self._flush_interval)
                with self._io_lock:
                    self._process(batch)
            except Exception:
                # The writer must outlive any surprise, or every later row would be lost.
                log.exception("prediction writer cycle failed")
                time.sleep(self._flush_interval)
        with self._io_lock:
            while batch := self._take(0.0):
                self._handle(batch)

    def _cycle(self, wait: float) -> None:
        self._process(self._take(wait))

    def _process(self, batch: list[Logged]) -> None:
        try:
            now = time.monotonic()
            if not self._health.down and now >= self._next_adopt:
                self._next_adopt = now + _ADOPT_EVERY
                self._adopt()
            if not self._spool.empty() and self._health.probe_due():
                self._replayer.replay()
        except Exception:
            # The batch taken off the queue must still be handled below, or it would be lost.
            log.exception("prediction spool replay failed")
        self._maintain()
        if batch:
            self._handle(batch)
        self._observer.queue_depth(self._queue.qsize() + len(self._overflow))
        self._drops.log()

    def _maintain(self) -> None:
        now = time.monotonic()
        if self._health.down or now < self._next_maintain:
            return
        self._next_maintain = now + _MAINTAIN_EVERY
        try:
            self._db.maintain()
        except StoreUnavailable as exc:
            self._health.mark_down(exc)
        except Exception:
            log.exception("prediction store maintenance failed")

    def _take(self, wait: float) -> list[Logged]:
        batch: list[Logged] = []
        deadline = time.monotonic() + wait
        try:
            # Wait in short slices so that stop() is not held up by a long flush interval.
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    batch.append(self._queue.get_nowait())
                    break
                try:
                    batch.append(self._queue.get(timeout=min(left, 0.05)))
                    break
                except queue.Empty:
                    continue
            while len(batch) < self._rows_per_insert:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _handle(self, batch: list[Logged]) -> None:
        try:
            # Spooled rows are older: new rows queue up behind them to keep the order.
            if not self._spool.empty() or (self._health.down and not self._health.probe_due()):
                self._to_spool(batch)
                return
            try:
                self._db.insert_logged(batch)
            except StoreUnavailable as exc:
                self._health.mark_down(exc)
                self._to_spool(batch)
                return
            except Exception:
                log.exception("prediction batch could not be written; spooling it")
                self._to_spool(batch)
                return
            self._health.mark_up()
            self._observer.written(rows_in(batch))
        finally:
            for _ in batch:
                self._queue.task_done()

    def _spool_queue(self) -> None:
        while batch := self._take(0.0):
            try:
                self._to_spool(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _adopt(self) -> None:
        try:
            self._spool.open()
            self._spool.adopt_orphans()
        except OSError as exc:
            self._spool_health.failed(exc)
        else:
            self._spool_health.usable()

    def _to_spool(self, records: Sequence[Logged]) -> None:
        try:
            lines = [r.to_json_line() for r in records]
            if lines:
                self._row_bytes = max(self._row_bytes, _bytes_per_row(records, lines))
            kept = self._spool.append(lines)
        except (OSError, TypeError, ValueError) as exc:
            self._spool_health.failed(exc)
            kept = 0
        else:
            self._spool_health.usable(kept, len(records))
        # `append` keeps the first lines it has room for; a batch is one line of many rows.
        rows, kept_rows = rows_in(records), rows_in(records[:kept])
        if kept_rows:
            self._observer.spooled(kept_rows)
        if kept_rows < rows:
            self._drop(rows - kept_rows, self._spool_health.drop_cause())

    def _rejected(self, n: int) -> None:
        self._drop(n, "rejected by the database (see the row-by-row errors)")

    def _unreadable(self, n: int) -> None:
        self._drop(n, "unreadable in the spool")

    def _drop(self, n: int, cause: str) -> None:
        self._drops.add(n, cause)
        self._observer.dropped(n)

    def state(self) -> StoreState:
        """ok, spooling or degraded, with the reason (for /ready)."""
        return store_state(self._health, self._spool_health, self._spool.pending_bytes)

"""Replaying the spool into the database, oldest segment first, resumable mid-segment."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from lifecycle.core.store.columns import CHUNK_KEY, Logged, PredictionColumns, rows_in
from lifecycle.core.store.database import PredictionDatabase, StoreUnavailable
from lifecycle.core.store.health import DatabaseHealth
from lifecycle.core.store.observer import StoreObserver
from lifecycle.core.store.spool import Spool, read_segment
from lifecycle.core.store.tables import PredictionRecord

log = logging.getLogger("lifecycle.core.store.writer")


class Replayer:
    """Moves spooled rows into the database; stops at the first failure and resumes there."""

    def __init__(
        self,
        spool: Spool,
        db: PredictionDatabase,
        health: DatabaseHealth,
        rows_per_insert: int,
        observer: StoreObserver,
        drop: Callable[[int], None],
    ) -> None:
        self._spool = spool
        self._db = db
        self._health = health
        self._rows_per_insert = rows_per_insert
        self._observer = observer
        self._drop = drop
        self._positions: dict[Path, int] = {}

    def replay(self) -> None:
        for segment in self._spool.take_segments():
            rows, bad = read_segment(segment)
            records: list[Logged] = []
            for row in rows:
                try:
                    records.append(
                        PredictionColumns.from_row(row)
                        if CHUNK_KEY in row
                        else PredictionRecord.from_row(row)
                    )
                except (KeyError, TypeError, ValueError):
                    bad += 1
            if bad and segment not in self._positions:
                # Only a crash in the middle of an append leaves such lines: count them once.
                log.error("spool segment %s: %d unreadable row(s) dropped", segment.name, bad)
                self._drop(bad)
            start = self._positions.get(segment, 0)
            for i in range(start, len(records), self._rows_per_insert):
                chunk = records[i : i + self._rows_per_insert]
                try:
                    self._db.insert_logged(chunk)
                except StoreUnavailable as exc:
                    self._positions[segment] = i
                    self._health.mark_down(exc)
                    return
                self._positions[segment] = i + len(chunk)
                self._observer.replayed(rows_in(chunk))
            self._spool.remove(segment)
            self._positions.pop(segment, None)
        self._health.mark_up()

"""The writer's view of its database (up, or down and when to try again) and its drop count.

Kept apart from the writer so its back-off and its rate-limited warnings read on their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lifecycle.core.store.spool import Spool

log = logging.getLogger("lifecycle.core.store.writer")

MAX_BACKOFF = 5.0
DROP_LOG_EVERY = 10.0


class DatabaseHealth:
    """Down after a failed write; probed again after a back-off that doubles up to 5 s."""

    def __init__(self, spool_root: Path) -> None:
        self._spool_root = spool_root
        self.down = False
        self.error: str | None = None
        self._backoff = 0.0
        self._next_probe = 0.0
        self._probe_now = threading.Event()

    def nudge(self) -> None:
        """A caller wants the rows now (flush): skip the rest of the back-off once."""
        self._probe_now.set()

    def probe_due(self) -> bool:
        if not self.down or time.monotonic() >= self._next_probe:
            return True
        if self._probe_now.is_set():
            self._probe_now.clear()
            return True
        return False

    def mark_down(self, exc: Exception) -> None:
        if not self.down:
            log.warning(
                "prediction database unavailable, rows go to the spool %s: %s",
                self._spool_root,
                exc,
            )
        self.down = True
        self.error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        self._backoff = min(max(self._backoff * 2, 0.25), MAX_BACKOFF)
        self._next_probe = time.monotonic() + self._backoff

    def mark_up(self) -> None:
        if self.down:
            log.info("prediction database is back")
        self.down = False
        self.error = None
        self._backoff = 0.0


class SpoolHealth:
    """Whether the spool takes rows, and why not: a failure is logged when it starts or
    changes, not once per batch (an unwritable spool used to log thousands of lines)."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self.error: str | None = None
        self.full = False

    def failed(self, exc: Exception) -> None:
        reason = f"spool {self._spool.root} unusable: {type(exc).__name__}: {exc}"
        if reason != self.error:
            log.error("prediction %s; rows the database cannot take are dropped", reason)
        self.error = reason

    def usable(self, kept: int | None = None, offered: int = 0) -> None:
        """The spool opened, or an append kept `kept` of `offered` lines."""
        if self.error is not None:
            log.info("prediction spool %s is usable again", self._spool.root)
        self.error = None
        if kept is not None:
            self.full = kept < offered

    def drop_cause(self) -> str:
        if self.error is not None:
            return self.error
        return f"spool {self._spool.root} reached its limit of {self._spool.max_bytes} bytes"


@dataclass(frozen=True)
class StoreState:
    """What /ready says of the prediction store: ok, spooling (database down or replaying)
    or degraded (predictions are being, or would be, dropped), and why."""

    state: str
    reason: str | None = None


def store_state(db: DatabaseHealth, spool: SpoolHealth, pending_bytes: int) -> StoreState:
    down = f"database unavailable: {db.error}" if db.down else None
    if spool.error is not None:
        return StoreState("degraded", "; ".join(r for r in (spool.error, down) if r))
    if spool.full and down is not None:
        return StoreState("degraded", f"{down}; {spool.drop_cause()}: new rows are dropped")
    if down is not None:
        return StoreState("spooling", down)
    if pending_bytes:
        return StoreState("spooling", f"replaying {pending_bytes} spooled bytes")
    return StoreState("ok")


class DropLog:
    """Counts dropped predictions by cause; at most one warning per interval, with the
    counts since the last one."""

    def __init__(self) -> None:
        self._unlogged: Counter[str] = Counter()
        self._next_log = 0.0
        self._lock = threading.Lock()

    def add(self, n: int, cause: str) -> None:
        with self._lock:
            self._unlogged[cause] += n
        self.log()

    def log(self) -> None:
        with self._lock:
            now = time.monotonic()
            if not self._unlogged or now < self._next_log:
                return
            counts, self._unlogged = self._unlogged, Counter()
            self._next_log = now + DROP_LOG_EVERY
        for cause, count in counts.items():
            log.warning("dropped %d prediction(s): %s", count, cause)

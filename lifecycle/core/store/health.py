"""The writer's view of its database (up, or down and when to try again) and its drop count.

Kept apart from the writer so its back-off and its rate-limited warnings read on their own.
"""

from __future__ import annotations

import logging
import threading
import time
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
                "prediction database unavailable, spooling to %s: %s", self._spool_root, exc
            )
        self.down = True
        self._backoff = min(max(self._backoff * 2, 0.25), MAX_BACKOFF)
        self._next_probe = time.monotonic() + self._backoff

    def mark_up(self) -> None:
        if self.down:
            log.info("prediction database is back")
        self.down = False
        self._backoff = 0.0


class DropLog:
    """Counts dropped predictions; at most one warning per interval, with the count since."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._unlogged = 0
        self._next_log = 0.0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self._unlogged += n
        self.log()

    def log(self) -> None:
        with self._lock:
            now = time.monotonic()
            if not self._unlogged or now < self._next_log:
                return
            count, self._unlogged = self._unlogged, 0
            self._next_log = now + DROP_LOG_EVERY
        log.warning(
            "dropped %d prediction(s): the queue was full and the spool %s reached its limit "
            "of %d bytes or could not be written",
            count,
            self._spool.root,
            self._spool.max_bytes,
        )

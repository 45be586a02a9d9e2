"""Rows the writer's queue had no room for, on their way to the spool on their own thread.

The spool fsyncs every append: a request that spilled to it itself would wait on the disk.
Instead the request hands its rows to this buffer and returns; one spiller thread appends
them to the spool in batches. The buffer is bounded by admission (`PredictionStore`
refuses a request it could not keep), not by blocking here.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

from lifecycle.core.store.columns import Logged, rows_in

log = logging.getLogger(__name__)

_SPILL_BATCH = 2000


class Overflow:
    def __init__(self, spill: Callable[[Sequence[Logged]], None]) -> None:
        self._spill = spill
        self._rows: deque[Logged] = deque()
        self._cond = threading.Condition()
        # Predictions in the buffer (a batch holds many), and those taken off it whose spool
        # append has not returned yet: flush() must not call the store drained while they
        # are in flight.
        self._held = 0
        self._in_flight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        """Predictions held or in flight."""
        return self._held + self._in_flight

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._cond:
            self._stopping = False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="prediction-store-spiller", daemon=True
            )
            self._thread.start()

    def put(self, records: Sequence[Logged]) -> None:
        """Never blocks on the disk: only appends to memory and wakes the spiller."""
        with self._cond:
            self._rows.extend(records)
            self._held += rows_in(records)
            self._cond.notify()

    def stop(self, timeout: float) -> None:
        """Stop the spiller, then spill what is left on the caller's thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        while batch := self._take():
            self._spill_batch(batch)

    def _take(self) -> list[Logged]:
        with self._cond:
            n = min(len(self._rows), _SPILL_BATCH)
            batch = [self._rows.popleft() for _ in range(n)]
            rows = rows_in(batch)
            self._held -= rows
            self._in_flight += rows
            return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._rows and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
            self._spill_batch(self._take())

    def _spill_batch(self, batch: list[Logged]) -> None:
        try:
            self._spill(batch)
        except Exception:
            # The spill callback counts its own drops; a surprise must not end the thread.
            log.exception("spilling %d prediction(s) to the spool failed", len(batch))
        finally:
            with self._cond:
                self._in_flight -= rows_in(batch)

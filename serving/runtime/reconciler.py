"""Following the registry: `holder.reconcile()` every poll interval in a daemon thread, or at
once when a webhook or an admin reload calls `trigger()`."""

from __future__ import annotations

import logging
import threading

from serving.runtime.holder import ModelHolder, Outcome

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, holder: ModelHolder, interval: float, max_backoff: float = 30.0) -> None:
        self.holder = holder
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._cycles = 0
        self._running = False
        self._last: Outcome | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="lifecycle-reconciler", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def trigger(self) -> None:
        self._wake.set()

    def reconcile_now(self, timeout: float = 60.0) -> Outcome | None:
        """Trigger and wait for a reconcile that started after this call."""
        with self._cond:
            target = self._cycles + (2 if self._running else 1)
            self.trigger()
            self._cond.wait_for(lambda: self._cycles >= target, timeout)
            return self._last if self._cycles >= target else None

    def _run(self) -> None:
        delay = self.interval
        while not self._stop.is_set():
            with self._cond:
                self._running = True
            try:
                outcome = self.holder.reconcile()
            except Exception as exc:  # a poller that dies silently would freeze the model
                log.exception("reconcile failed")
                outcome = Outcome("degraded", detail=f"{type(exc).__name__}: {exc}")
            if outcome.action == "degraded":
                delay = min(delay * 2, self.max_backoff)
                log.warning("%s; next try in %.1fs", outcome.detail, delay)
            else:
                delay = self.interval
            with self._cond:
                self._running = False
                self._cycles += 1
                self._last = outcome
                self._cond.notify_all()
            self._wake.wait(delay)
            self._wake.clear()

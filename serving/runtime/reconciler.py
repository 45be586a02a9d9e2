"""Following the registry: `holder.reconcile()` every poll interval in a daemon thread, or at
once when a webhook or an admin reload calls `trigger()`."""

from __future__ import annotations

import logging
import threading
import time

from serving.runtime.holder import ModelHolder, Outcome

log = logging.getLogger(__name__)


# While the registry is down the poller waits at most this many poll intervals: a failed
# probe costs one short request, and a longer back-off (it was 30 s) delays the first
# promotion after the registry comes back by as much.
BACKOFF_INTERVALS = 2.0
# Probing that often, a long outage would log a line every few seconds: say the same error
# again only after this long.
REPEAT_WARNING_EVERY = 60.0


class Reconciler:
    def __init__(
        self, holder: ModelHolder, interval: float, max_backoff: float | None = None
    ) -> None:
        self.holder = holder
        self.interval = interval
        cap = BACKOFF_INTERVALS * interval if max_backoff is None else max_backoff
        self.max_backoff = max(cap, interval)
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
        warned: str | None = None
        warned_at = 0.0
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
                now = time.monotonic()
                if outcome.detail != warned or now - warned_at >= REPEAT_WARNING_EVERY:
                    log.warning("%s; retrying every %.1fs", outcome.detail, delay)
                    warned, warned_at = outcome.detail, now
            else:
                if warned is not None:
                    log.info("registry answers again")
                warned = None
                delay = self.interval
            with self._cond:
                self._running = False
                self._cycles += 1
                self._last = outcome
                self._cond.notify_all()
            self._wake.wait(delay)
            self._wake.clear()

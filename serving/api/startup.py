"""One API process's start and stop: take traffic only with a model, drain before stopping.

uvicorn accepts connections only once the lifespan startup has finished, and with
`--workers N` every worker accepts on the one listening socket the supervisor shares: a
worker still loading its model accepts nothing, so the kernel hands new connections to the
workers that are serving. Loading the model before the startup ends is therefore what keeps a
restarted worker from answering 503 "no model loaded yet".

On SIGTERM a server behind a load balancer must first fail its readiness check and keep
serving until the balancer has noticed, then stop accepting and finish what it has read:
`Drain` defers uvicorn's own SIGTERM handler by a grace period and marks the process
draining, which /ready reports as 503 and every answer as `Connection: close` (so clients
reconnect, possibly elsewhere, instead of reusing a connection about to be closed).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

from serving.runtime import ModelHolder

log = logging.getLogger(__name__)

# Between start-up attempts to load the model: short, since nothing is served meanwhile.
_FIRST_RETRY = 0.5
_MAX_RETRY = 5.0


@dataclass
class ProcessState:
    """Read by /ready and the request middleware: plain attributes, no lock on the hot path."""

    draining: bool = False
    startup_error: str | None = None


async def load_before_serving(holder: ModelHolder, timeout: float, state: ProcessState) -> None:
    """Reconcile (in a thread, retried) until a model is loaded or `timeout` has passed.

    After the timeout the process starts anyway, degraded: /ready says why and answers 503
    until the reconciler loads a model. Failing the start instead would make uvicorn's
    supervisor stop every worker, a whole outage for a registry that is down for a while.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = _FIRST_RETRY
    detail: str | None = None
    while holder.current is None:
        left = deadline - loop.time()
        if left <= 0:
            break
        attempt = asyncio.ensure_future(asyncio.to_thread(holder.reconcile))
        done, _ = await asyncio.wait({attempt}, timeout=left)
        if not done:
            # The load goes on in its thread; the reconciler finds it done (holder lock).
            detail = "still loading"
            break
        detail = attempt.result().detail
        if holder.current is None:
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, _MAX_RETRY)
    if holder.current is None:
        state.startup_error = (
            f"no model loaded within {timeout:g}s of start-up"
            + (f" ({detail})" if detail else "")
            + "; answering 503 until one loads"
        )
        log.warning("%s", state.startup_error)
    else:
        state.startup_error = None


class Drain:
    """Defers the server's SIGTERM handler by `grace` seconds, marking the process draining."""

    def __init__(self, state: ProcessState, grace: float) -> None:
        self._state = state
        self._grace = grace
        self._previous: Any = None

    def install(self) -> None:
        """Wrap the SIGTERM handler the server installed (uvicorn: `Server.handle_exit`).

        Only from the main thread, and only over a Python handler: under a test client or
        with no handler there is no server to defer.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return
        self._previous = previous
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def uninstall(self) -> None:
        if self._previous is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous)
        self._previous = None

    def _on_sigterm(self, sig: int, frame: FrameType | None) -> None:
        again = self._state.draining
        self._state.draining = True
        if again or self._grace <= 0:
            self._previous(sig, frame)  # a second SIGTERM stops at once
            return
        log.info("SIGTERM: /ready answers 503; serving %.1fs more, then stopping", self._grace)
        # A timer thread, not the event loop: this runs inside a signal handler. uvicorn's
        # handler only sets flags its main loop polls, so calling it from a thread is safe.
        timer = threading.Timer(self._grace, self._previous, args=(sig, frame))
        timer.daemon = True
        timer.start()

"""Reports on a fixed interval in one process: the embedded mode's scheduler (`lifecycle up`
runs `lifecycle drift --every`) until a pipeline schedules reports instead."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from lifecycle.core.errors import LifecycleError


def repeat(
    once: Callable[[], Any],
    every: float,
    echo: Callable[[str], None],
    stop: threading.Event | None = None,
) -> None:
    """Call `once` now and then every `every` seconds until SIGTERM, SIGINT or `stop`. A
    report that cannot be made (no predictions yet, the tracking server restarting) is one
    line, and the next tick tries again."""
    stop = stop or _stop_on_signals()
    while not stop.is_set():
        try:
            once()
        except LifecycleError as exc:
            echo(f"report skipped: {exc.message}")
        except Exception as exc:  # a scheduler outlives one bad report
            echo(f"report failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        stop.wait(every)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop

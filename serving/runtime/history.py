"""What this process's holder swapped to, and what it failed to swap to: the last N events.

In memory and per process on purpose: it answers "what did *this* server do", which the
registry (what should be served) and the Prometheus counters (how often) cannot. Each uvicorn
worker keeps its own; the API reports the process id with it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from serving.runtime.loader import LoadedModel

DEFAULT_SIZE = 100


@dataclass(frozen=True)
class SwapEvent:
    """One swap (`seconds` to load and smoke-test) or one failed swap (`reason`)."""

    kind: Literal["swap", "failure"]
    name: str
    version: str
    at: datetime
    run_id: str | None = None
    seconds: float | None = None
    previous_version: str | None = None
    reason: str | None = None


class SwapHistory:
    """A bounded log of swaps and failed swaps, newest first. Written by the reconciler's
    thread (through the holder), read by request handlers: a lock keeps the two apart."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, not {size}")
        self._events: deque[SwapEvent] = deque(maxlen=size)
        self._lock = threading.Lock()

    def swapped(self, model: LoadedModel, previous: LoadedModel | None, seconds: float) -> None:
        self._add(
            SwapEvent(
                kind="swap",
                name=model.name,
                version=model.version,
                at=datetime.now(UTC),
                run_id=model.run_id,
                seconds=seconds,
                previous_version=previous.version if previous else None,
            )
        )

    def swap_failed(self, name: str, version: str, reason: str) -> None:
        self._add(
            SwapEvent(
                kind="failure", name=name, version=version, at=datetime.now(UTC), reason=reason
            )
        )

    def events(self) -> list[SwapEvent]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._events))

    def _add(self, event: SwapEvent) -> None:
        with self._lock:
            self._events.append(event)

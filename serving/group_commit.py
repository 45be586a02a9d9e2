"""Group commit: callers on many threads hand one item each to a single writer thread, which
processes every item waiting at that moment in one go and wakes each caller with its own result.

No timer: under light load a batch is one item and waits for nothing; while one batch is being
processed the next one gathers, so batches grow with the number of concurrent callers. A caller
returns only after its batch was processed, so whatever the processing commits is committed
when `submit` returns.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


# Called in the writer thread with the item's result, or None and the batch's failure.
Done = Callable[[R | None, BaseException | None], None]


@dataclass(slots=True)
class _Ticket(Generic[T, R]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    result: R | None = None
    failure: BaseException | None = None
    callback: Done[R] | None = None


class GroupCommit(Generic[T, R]):
    """`process(items)` returns one result per item, in order, or raises for all of them."""

    def __init__(
        self, process: Callable[[Sequence[T]], Sequence[R]], name: str, max_items: int = 256
    ) -> None:
        self._process = process
        self._name = name
        self._max_items = max_items
        self._cond = threading.Condition()
        self._waiting: list[_Ticket[T, R]] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, item: T) -> R:
        """The item's result once its batch is processed; raises the batch's failure (a copy,
        so that threads raising it at once do not share one traceback)."""
        ticket: _Ticket[T, R] = _Ticket(item)
        self._enqueue(ticket)
        ticket.done.wait()
        if ticket.failure is not None:
            raise copy.copy(ticket.failure)
        return ticket.result  # type: ignore[return-value]

    def submit_nowait(self, item: T, done: Done[R]) -> None:
        """Queue the item and return at once; `done(result, failure)` runs in the writer
        thread once its batch is processed. It must not block: the next batch waits on it."""
        self._enqueue(_Ticket(item, callback=done))

    def _enqueue(self, ticket: _Ticket[T, R]) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._waiting.append(ticket)
            self._cond.notify()

    def stop(self, timeout: float = 10.0) -> None:
        """Process what is waiting, then end the thread (a later submit starts a new one)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if not self._waiting:
                    return
                batch = self._waiting[: self._max_items]
                del self._waiting[: self._max_items]
            self._handle(batch)

    def _handle(self, batch: list[_Ticket[T, R]]) -> None:
        try:
            results = self._process([t.item for t in batch])
        except BaseException as exc:  # every waiting caller must wake, whatever happened
            for ticket in batch:
                ticket.failure = exc
                _wake(ticket)
            return
        for ticket, result in zip(batch, results, strict=True):
            ticket.result = result
            _wake(ticket)


def _wake(ticket: _Ticket[T, R]) -> None:
    if ticket.callback is None:
        ticket.done.set()
        return
    try:
        ticket.callback(ticket.result, ticket.failure)
    except Exception:  # one caller's callback must not keep the others waiting
        log.exception("group commit: a completion callback failed")

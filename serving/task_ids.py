"""The task ids Lifecycle has sent, so `GET /tasks/{id}` can tell a typo from a queued task.

Celery's result backend answers "pending" for any id it has no record of, so a made-up id
would be polled forever. Every id a Lifecycle Celery client sends is recorded here first, in
the application database, which every uvicorn worker, API replica and worker process shares.
The insert skips an id already recorded: a client retrying with the same X-Request-Id, or a
task retried by the worker, records nothing new.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa

from lifecycle.core.errors import LifecycleError
from lifecycle.core.store.tables import dialect_insert, make_engine

_tasks = sa.Table(
    "async_tasks",
    sa.MetaData(),
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


class TaskLedgerUnavailable(LifecycleError):
    status_code = 503


class TaskLedger:
    def __init__(self, database_url: str) -> None:
        self._engine = make_engine(database_url)
        self._insert = dialect_insert(self._engine, _tasks).on_conflict_do_nothing(
            index_elements=["task_id"]
        )
        self._created = False
        self._create_lock = threading.Lock()

    def record(self, task_id: str, name: str) -> None:
        """Remember `task_id` before it is sent: a 202 never names an id this cannot find."""
        row = {"task_id": task_id, "name": name, "sent_at": datetime.now(UTC)}
        with self._begin() as conn:
            conn.execute(self._insert, row)

    def known(self, task_id: str) -> bool:
        with self._begin() as conn:
            stmt = sa.select(_tasks.c.task_id).where(_tasks.c.task_id == task_id)
            return conn.execute(stmt).first() is not None

    def dispose(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        # Any database failure is one 503: neither the API nor a client sees a driver error.
        try:
            self._create_table()
            with self._engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise TaskLedgerUnavailable(f"task ledger unavailable ({type(exc).__name__})") from exc

    def _create_table(self) -> None:
        if self._created:
            return
        # Threads of one process wait for the first; processes starting at once race on the
        # catalog, and the loser finds the table on its next check.
        with self._create_lock:
            for attempt in range(3):
                if self._created:
                    return
                try:
                    _tasks.metadata.create_all(self._engine, checkfirst=True)
                    self._created = True
                except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
                    if attempt == 2:
                        raise
                    time.sleep(0.1)

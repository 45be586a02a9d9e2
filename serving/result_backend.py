"""Celery's SQLAlchemy result backend, pooled, with many task states written in one statement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import states
from celery.backends.database import DatabaseBackend, session_cleanup
from kombu.utils.encoding import ensure_bytes
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm.attributes import flag_modified

# What Celery's result backend stores for one state change: task id, result (encoded),
# state, traceback, request.
StateWrite = tuple[str, Any, str, Any, Any]


class PooledDatabaseBackend(DatabaseBackend):
    """Celery's SQLAlchemy result backend with pooled connections.

    Outside a prefork child, Celery builds a new engine with NullPool for every state change:
    a fresh database connection per write, about 10 ms each here, which capped a threads-pool
    worker at ~50 single-row tasks/s. Sessions stay per operation, so threads do not share one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_manager.forked = True
        # One instance per app (Celery's default is one per thread): one engine and one
        # connection pool serve every pool thread and the scoring batch's state writes.
        self.thread_safe = True

    def store_states(self, batch: Sequence[StateWrite]) -> None:
        """Many task states in one transaction; each alone if that fails."""
        try:
            self._store_together(batch)
        except Exception:
            # A conflict (two workers inserting one id) must not fail the others' states.
            for write in batch:
                self._store_result(*write)

    def _store_together(self, batch: Sequence[StateWrite]) -> None:
        session = self.ResultSession()
        with session_cleanup(session):
            if session.get_bind().dialect.name == "postgresql" and not self._extended():
                self._upsert(session, batch)
            else:
                self._update_each(session, batch)
            session.commit()

    def _extended(self) -> bool:
        return bool(self.app.conf.find_value_for_key("extended", "result"))

    def _upsert(self, session: Any, batch: Sequence[StateWrite]) -> None:
        """One INSERT ... ON CONFLICT (task_id) DO UPDATE for the whole batch, with the values
        Celery's `_update_result` writes, and the same rule: a SUCCESS already stored stays.
        The ORM's path read and wrote the tasks one object at a time, which took most of a
        one-row scoring batch's time (serving/score_strategy.py)."""
        table = self.task_cls.__table__
        # Celery's columns but the key, the children and the stamps (as `_update_result`).
        columns = [
            c.name for c in table.columns if c.name not in {"id", "task_id", "children", "stamps"}
        ]
        rows: dict[str, dict[str, Any]] = {}
        for task_id, result, state, traceback, request in batch:
            meta = self._get_result_meta(
                result=ensure_bytes(self.encode(result)),
                state=state,
                traceback=traceback,
                request=request,
                format_date=False,
                encode=True,
            )
            # The last write of a task id wins, as it does when they are applied in turn.
            rows[task_id] = {"task_id": task_id, **{c: meta.get(c) for c in columns}}
        # Executed with many parameter sets, not one VALUES list: the statement compiles once
        # and is cached, whatever the batch's size.
        insert = postgresql.insert(table)
        upsert = insert.on_conflict_do_update(
            index_elements=[table.c.task_id],
            set_={c: insert.excluded[c] for c in columns},
            where=table.c.status != states.SUCCESS,
        )
        session.execute(upsert, list(rows.values()))

    def _update_each(self, session: Any, batch: Sequence[StateWrite]) -> None:
        """Celery's `_store_result` for many tasks in one session: rows locked and read once,
        a SUCCESS already stored never written over, every state written."""
        ids = list({write[0] for write in batch})
        query = session.query(self.task_cls).filter(self.task_cls.task_id.in_(ids))
        tasks = {t.task_id: t for t in query.with_for_update().populate_existing()}
        for task_id, result, state, traceback, request in batch:
            task = tasks.get(task_id)
            if task is None:
                task = self.task_cls(task_id)
                task.task_id = task_id
                session.add(task)
                tasks[task_id] = task
            elif task.status == states.SUCCESS:
                continue
            self._update_result(task, result, state, traceback=traceback, request=request)
            flag_modified(task, "status")

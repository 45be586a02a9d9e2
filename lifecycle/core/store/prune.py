"""Retention of the prediction log: `lifecycle prune --older-than DURATION` and the
`prediction_retention` setting, applied by the store's maintenance hook.

PostgreSQL: day partitions wholly older than the cutoff are dropped (no row is deleted, no
table is vacuumed afterwards); rows of the default partition older than the cutoff are
deleted; so are the feedback labels of what goes. The same holds for `prediction_chunks`
(chunks.py), whose rows count as the predictions they hold. Rows of the day that holds the
cutoff stay until their whole day is older, so up to a day more than asked is kept. SQLite:
rows older than the cutoff, and their feedback, are deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lifecycle.core.store.partitions import (
    CHUNKS,
    LOCK_TIMEOUT,
    PARENT,
    day_partitions,
    default_partition,
)
from lifecycle.core.store.tables import as_utc, feedback, predictions

# pg_try_advisory_lock key: one process at a time applies the retention ("lcprune").
PRUNE_LOCK = 0x6C6370_72756E65


@dataclass
class Pruned:
    """What a prune removed."""

    cutoff: datetime
    partitions: dict[str, int] = field(default_factory=dict)  # dropped: name -> rows
    rows_deleted: int = 0
    feedback_deleted: int = 0
    skipped: bool = False  # another process holds the retention lock

    @property
    def rows(self) -> int:
        return sum(self.partitions.values()) + self.rows_deleted

    def describe(self) -> list[str]:
        lines = [f"dropped partition {name} ({n} rows)" for name, n in self.partitions.items()]
        what = "rows from the default partition" if self.partitions else "rows"
        return [
            *lines,
            f"deleted {self.rows_deleted} {what} older than {self.cutoff.isoformat()}",
            f"deleted {self.feedback_deleted} feedback labels of pruned predictions",
        ]


def prune(conn: Connection, cutoff: datetime) -> Pruned:
    """Remove predictions older than `cutoff` in the caller's transaction (see the module)."""
    cutoff = as_utc(cutoff)
    if conn.dialect.name == "postgresql":
        return _prune_postgresql(conn, cutoff)
    p, f = predictions.c, feedback.c
    old = sa.select(p.request_id).where(p.created_at < cutoff)
    result = Pruned(cutoff)
    result.feedback_deleted = conn.execute(
        sa.delete(feedback).where(f.request_id.in_(old))
    ).rowcount
    result.rows_deleted = conn.execute(sa.delete(predictions).where(p.created_at < cutoff)).rowcount
    return result


def _prune_postgresql(conn: Connection, cutoff: datetime) -> Pruned:
    result = Pruned(cutoff)
    if not conn.execute(
        sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": PRUNE_LOCK}
    ).scalar():
        result.skipped = True
        return result
    # Dropping a partition locks `predictions` exclusively: give up rather than hold every
    # insert behind a long report query; the next run tries again.
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    for layout in _LAYOUTS:
        _prune_parent(conn, cutoff, layout, result)
    return result


@dataclass(frozen=True)
class _Layout:
    """A partitioned table of predictions: its name, which feedback labels belong to a row
    `p` of it, and how many predictions its rows hold."""

    parent: str
    owns_feedback: str
    predictions: str


# A chunk row holds the request ids `<id_prefix><row>` for its n rows (chunks.py).
_CHUNK_FEEDBACK = (
    "left(f.request_id, length(p.id_prefix)) = p.id_prefix "
    "AND substr(f.request_id, length(p.id_prefix) + 1) ~ '^(0|[1-9][0-9]{0,17})$' "
    "AND substr(f.request_id, length(p.id_prefix) + 1)::bigint >= p.first_row "
    "AND substr(f.request_id, length(p.id_prefix) + 1)::bigint < p.first_row + p.n"
)
_LAYOUTS = (
    _Layout(PARENT, "f.request_id = p.request_id", "count(*)"),
    _Layout(CHUNKS, _CHUNK_FEEDBACK, "coalesce(sum(n), 0)"),
)


def _prune_parent(conn: Connection, cutoff: datetime, layout: _Layout, result: Pruned) -> None:
    for partition in day_partitions(conn, layout.parent):
        if partition.end > cutoff:
            break
        name = partition.name
        result.feedback_deleted += conn.exec_driver_sql(
            f"DELETE FROM {feedback.name} f USING {name} p WHERE {layout.owns_feedback}"
        ).rowcount
        result.partitions[name] = int(
            conn.exec_driver_sql(f"SELECT {layout.predictions} FROM {name}").scalar_one()
        )
        conn.exec_driver_sql(f"DROP TABLE {name}")
    default, old = default_partition(layout.parent), {"cutoff": cutoff}
    result.feedback_deleted += conn.execute(
        sa.text(
            f"DELETE FROM {feedback.name} f USING {default} p "
            f"WHERE p.created_at < :cutoff AND {layout.owns_feedback}"
        ),
        old,
    ).rowcount
    result.rows_deleted += int(
        conn.execute(
            sa.text(
                f"WITH gone AS (DELETE FROM {default} p WHERE created_at < :cutoff "
                f"RETURNING p.*) SELECT {layout.predictions} FROM gone"
            ),
            old,
        ).scalar_one()
    )

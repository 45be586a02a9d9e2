"""PostgreSQL's layout of the prediction log: `predictions` partitioned by RANGE on
`created_at`, one partition per UTC day (`predictions_pYYYYMMDD`) and a DEFAULT partition
(`predictions_default`) for rows outside every day partition (late or far-future rows), so
an insert never fails for lack of a partition.

Day partitions are made ahead of time (today and AHEAD_DAYS after) by whoever writes: at
schema setup and from the store's maintenance hook. SQLite keeps one plain table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

PARENT = "predictions"
DEFAULT = "predictions_default"
# Per-chunk rows of columnar batches (chunks.py): the same layout, partitioned alike.
CHUNKS = "prediction_chunks"
PARENTS = (PARENT, CHUNKS)
AHEAD_DAYS = 3
# Attaching a partition waits for readers of the default partition; past this wait it gives
# up (and the next maintenance tries again) rather than queue every insert behind it.
LOCK_TIMEOUT = "5s"


def partition_name(day: date, parent: str = PARENT) -> str:
    return f"{parent}_p{day:%Y%m%d}"


def default_partition(parent: str = PARENT) -> str:
    return f"{parent}_default"


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _literal(moment: datetime) -> str:
    # An explicit UTC offset: the bound does not depend on the session's TimeZone.
    return f"'{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}+00'"


@dataclass(frozen=True)
class DayPartition:
    name: str
    day: date

    @property
    def start(self) -> datetime:
        return day_start(self.day)

    @property
    def end(self) -> datetime:
        return day_start(self.day + timedelta(days=1))


def day_partitions(conn: Connection, parent: str = PARENT) -> list[DayPartition]:
    """The day partitions of `parent` that exist, oldest first (the default partition is not
    one)."""
    pattern = re.compile(rf"^{re.escape(parent)}_p(\d{{8}})$")
    rows = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:parent)"
        ),
        {"parent": parent},
    )
    found = []
    for (name,) in rows:
        match = pattern.match(name)
        if match:
            found.append(DayPartition(name, datetime.strptime(match[1], "%Y%m%d").date()))
    return sorted(found, key=lambda p: p.day)


def ensure_day_partitions(
    conn: Connection, days: Iterable[date], parent: str = PARENT
) -> list[str]:
    """Create the missing day partitions among `days`; return the names created.

    Each is created as a plain table, filled with the default partition's rows of its day,
    then attached: ATTACH needs only a SHARE UPDATE EXCLUSIVE lock on `predictions` (inserts
    and reads go on), where CREATE TABLE ... PARTITION OF would take an exclusive one, and it
    fails, rather than moving them, when the default partition holds rows of the day."""
    existing = {p.day for p in day_partitions(conn, parent)}
    default = default_partition(parent)
    created = []
    for day in sorted(set(days) - existing):
        name = partition_name(day, parent)
        lower, upper = _literal(day_start(day)), _literal(day_start(day + timedelta(days=1)))
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # STORAGE: the chunk table keeps its arrays uncompressed (chunks.py).
        conn.exec_driver_sql(
            f"CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING STORAGE)"
        )
        conn.exec_driver_sql(
            f"WITH moved AS (DELETE FROM {default} WHERE created_at >= {lower} "
            f"AND created_at < {upper} RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )
        conn.exec_driver_sql(
            f"ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES FROM ({lower}) TO ({upper})"
        )
        created.append(name)
    return created


def days_between(since: datetime, until: datetime) -> list[date]:
    """The UTC days from since's to until's, both included."""
    first, last = since.astimezone(UTC).date(), until.astimezone(UTC).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def days_ahead(now: datetime) -> list[date]:
    """Today (UTC) and the AHEAD_DAYS after it: the partitions writers need next."""
    today = now.astimezone(UTC).date()
    return [today + timedelta(days=i) for i in range(AHEAD_DAYS + 1)]

"""PostgreSQL's bulk path for the prediction log: `COPY` a batch into a staging table, then
one `INSERT ... SELECT ... ON CONFLICT (request_id, created_at) DO NOTHING`, in one transaction.

COPY parses rows an order of magnitude faster than INSERT statements carrying the same values,
and the INSERT from the staging table keeps what the plain INSERT guaranteed: a request id
already stored (a replayed spool, a redelivered task) is skipped, and the statement returns the
ids it did insert. The staging table is a temporary table of the connection, emptied at every
commit. The COPY text comes from rows (`to_csv`) or, for a columnar batch, from its columns
(copy_text.py); both reach the same staging table and the same INSERT.

A batch with no row flagged `recheck` (the key alone decides: request ids the server made, a
file job stamped with its accepted time) is first copied straight into `predictions`, inside a
savepoint: the key (request_id, created_at) is unique, so the COPY either stores every row or
fails on the first one already stored, and is then rolled back to the savepoint and stored
through the staging table, which skips what is there. Most batches store nothing twice, and
this saves writing every row twice (the staging table, then `predictions`) and the INSERT's
pass over it: about a tenth of the database's time per row (docs/prediction-store.md).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lifecycle.core.store.columns import PredictionColumns
from lifecycle.core.store.copy_text import copy_text
from lifecycle.core.store.tables import DEDUP_INTERVAL_SQL, DEDUP_WINDOW, dumps, predictions

STAGE = "lifecycle_predictions_stage"
_COLUMNS = tuple(c.name for c in predictions.columns)
_JSON_COLUMNS = frozenset(c.name for c in predictions.columns if isinstance(c.type, sa.JSON))
_LIST = ", ".join(_COLUMNS)
# The staging table has one more column than `predictions`: the rows' `recheck` flag
# (PredictionRecord.recheck), which the move reads and does not store.
_CREATE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} "
    f"(LIKE {predictions.name} INCLUDING DEFAULTS, recheck boolean NOT NULL) "
    "ON COMMIT DELETE ROWS"
)
STAGE_COLUMNS = (*_COLUMNS, "recheck")
_COPY = f"COPY {STAGE} ({', '.join(STAGE_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
_DIRECT = f"COPY {predictions.name} ({_LIST}) FROM STDIN WITH (FORMAT csv)"
_UNIQUE_VIOLATION = "23505"
# Exactly once (docs/prediction-store.md, "Exactly once"). Every row: the key
# (request_id, created_at) catches a copy with the same created_at (a replayed spool, a
# redelivered file job stamped with its accepted time, another writer's row committed
# meanwhile). Rows flagged `recheck` (a redelivered task scored again, a client's retry):
# one row per request id of the batch, none whose request id is stored with a created_at
# within DEDUP_WINDOW of its own. `stored` looks the flagged ids up in one index scan per
# partition of their time range (constants, so the planner keeps only those partitions: with
# per-row bounds alone it opened every partition for every batch, 130 ms a batch at 400
# partitions against 5 ms); a correlated NOT EXISTS probing `predictions` row by row cost
# about 20 % more database CPU per row.
_MOVE = (
    "WITH stored AS MATERIALIZED (SELECT p.request_id, p.created_at FROM "
    f"{predictions.name} p WHERE p.request_id = ANY "
    f"(ARRAY(SELECT request_id FROM {STAGE} WHERE recheck)) "
    "AND p.created_at >= %(since)s AND p.created_at <= %(until)s) "
    f"INSERT INTO {predictions.name} ({_LIST}) "
    f"SELECT DISTINCT ON (s.request_id) {', '.join('s.' + c for c in _COLUMNS)} FROM {STAGE} s "
    "WHERE NOT (s.recheck AND EXISTS (SELECT 1 FROM stored d "
    "WHERE d.request_id = s.request_id "
    f"AND d.created_at >= s.created_at - {DEDUP_INTERVAL_SQL} "
    f"AND d.created_at <= s.created_at + {DEDUP_INTERVAL_SQL})) "
    "ORDER BY s.request_id, s.created_at "
    "ON CONFLICT (request_id, created_at) DO NOTHING RETURNING request_id"
)
# No row flagged: the key alone. A request id twice in the batch with the same created_at is
# caught by the key too (DO NOTHING sees the rows this statement inserted).
_MOVE_KEYED = (
    f"INSERT INTO {predictions.name} ({_LIST}) SELECT {_LIST} FROM {STAGE} "
    "ON CONFLICT (request_id, created_at) DO NOTHING RETURNING request_id"
)

# The created_at range of a batch's flagged rows; None when no row is flagged.
Flagged = tuple[datetime, datetime] | None


def flagged_range(created: Sequence[datetime], recheck: Sequence[bool]) -> Flagged:
    times = [at for at, flag in zip(created, recheck, strict=True) if flag]
    return (min(times), max(times)) if times else None


def move_staged(conn: Connection, flagged: Flagged) -> int:
    """Move the staging table's rows into `predictions`; return how many were new.
    `flagged` is the created_at range of the rows flagged `recheck` (from the caller, which
    has the rows: no round trip to ask the staging table)."""
    if flagged is None:
        return len(conn.exec_driver_sql(_MOVE_KEYED).all())
    low, high = flagged
    bounds = {"since": low - DEDUP_WINDOW, "until": high + DEDUP_WINDOW}
    return len(conn.exec_driver_sql(_MOVE, bounds).all())


def copy_supported(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2"


def copy_insert(conn: Connection, rows: Sequence[dict[str, Any]], recheck: Sequence[bool]) -> int:
    """Store `rows` (PredictionRecord.to_row() dicts, with each record's `recheck` flag)
    inside the caller's transaction; return how many were new. A driver error comes back as
    SQLAlchemy's (DBAPIError and its subclasses), as the INSERT path raises it, so the caller
    tells an outage from a bad row the same way."""
    if not any(recheck) and _copy_direct(conn, to_csv(rows, None).encode()):
        return len(rows)
    flagged = flagged_range([row["created_at"] for row in rows], recheck)
    return _copy_move(conn, io.StringIO(to_csv(rows, recheck)), flagged)


def copy_columns(conn: Connection, batch: PredictionColumns) -> int:
    """`copy_insert` for a columnar batch: the COPY text is built column by column
    (copy_text.py), with no Python object per row. Raises NotColumnar, before anything is
    sent, for a batch or a table layout the columnar text does not cover."""
    if not batch.recheck and _copy_direct(conn, copy_text(batch, _COLUMNS)):
        return len(batch)
    at = batch.created_at
    flagged = (at, at) if batch.recheck else None
    return _copy_move(conn, io.BytesIO(copy_text(batch, STAGE_COLUMNS)), flagged)


def _copy_direct(conn: Connection, text: bytes) -> bool:
    """COPY rows whose key alone decides straight into `predictions`, in a savepoint; False,
    with nothing stored, when one of them is stored already (or twice in the batch)."""
    try:
        with conn.begin_nested():
            _copy(conn, _DIRECT, io.BytesIO(text))
    except sa.exc.IntegrityError as exc:
        if getattr(exc.orig, "pgcode", None) != _UNIQUE_VIOLATION:
            raise
        return False
    return True


def _copy_move(conn: Connection, text: IO[str] | IO[bytes], flagged: Flagged) -> int:
    conn.exec_driver_sql(_CREATE)
    _copy(conn, _COPY, text)
    return move_staged(conn, flagged)


def _copy(conn: Connection, statement: str, text: IO[str] | IO[bytes]) -> None:
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(statement, text)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from exc
    finally:
        cursor.close()


def to_csv(rows: Sequence[dict[str, Any]], recheck: Sequence[bool] | None) -> str:
    """The rows as COPY's CSV: every value quoted, SQL NULL as an unquoted empty field (so an
    empty string stays an empty string), JSON columns as the same text the INSERT path
    stores (None there is JSON null, as SQLAlchemy's JSON type stores it); then the flag,
    for the staging table (none with `recheck` None: the columns of `predictions`)."""
    lines = []
    flags: Sequence[bool | None] = [None] * len(rows) if recheck is None else recheck
    for row, flag in zip(rows, flags, strict=True):
        fields = []
        for name in _COLUMNS:
            value = row[name]
            if name in _JSON_COLUMNS:
                value = dumps(value)
            elif value is None:
                fields.append("")
                continue
            elif isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, float):
                value = repr(value)
            fields.append('"' + str(value).replace('"', '""') + '"')
        if flag is not None:
            fields.append('"t"' if flag else '"f"')
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"

"""PostgreSQL's bulk path for the prediction log: `COPY` a batch into a staging table, then
one `INSERT ... SELECT ... ON CONFLICT (request_id) DO NOTHING`, in one transaction.

COPY parses rows an order of magnitude faster than INSERT statements carrying the same values,
and the INSERT from the staging table keeps what the plain INSERT guaranteed: a request id
already stored (a replayed spool, a redelivered task) is skipped, and the statement returns the
ids it did insert. The staging table is a temporary table of the connection, emptied at every
commit. The COPY text comes from rows (`to_csv`) or, for a columnar batch, from its columns
(copy_text.py); both reach the same staging table and the same INSERT.
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
_CREATE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} "
    f"(LIKE {predictions.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY {STAGE} ({_LIST}) FROM STDIN WITH (FORMAT csv)"
# Exactly once (docs/prediction-store.md, "Exactly once"): one row per request id of the
# batch, none whose request id is stored with a created_at within DEDUP_WINDOW of its own (a
# redelivered task scored again), and the key (request_id, created_at) for the rest (a
# replayed spool, or another writer's row committed meanwhile). `stored` looks the batch's ids
# up in one index scan per partition of the batch's time range (constants, so the planner
# keeps only those partitions: with per-row bounds alone it opened every partition for every
# batch, 130 ms a batch at 400 partitions against 5 ms); a correlated NOT EXISTS probing
# `predictions` row by row cost about 20 % more database CPU per row.
_MOVE = (
    "WITH stored AS MATERIALIZED (SELECT p.request_id, p.created_at "
    f"FROM {predictions.name} p WHERE p.request_id = ANY (ARRAY(SELECT request_id FROM {STAGE})) "
    "AND p.created_at >= %(since)s AND p.created_at <= %(until)s) "
    f"INSERT INTO {predictions.name} ({_LIST}) "
    f"SELECT DISTINCT ON (s.request_id) {', '.join('s.' + c for c in _COLUMNS)} FROM {STAGE} s "
    "WHERE NOT EXISTS (SELECT 1 FROM stored d WHERE d.request_id = s.request_id "
    f"AND d.created_at >= s.created_at - {DEDUP_INTERVAL_SQL} "
    f"AND d.created_at <= s.created_at + {DEDUP_INTERVAL_SQL}) "
    "ORDER BY s.request_id, s.created_at "
    "ON CONFLICT (request_id, created_at) DO NOTHING RETURNING request_id"
)
_BOUNDS = f"SELECT min(created_at), max(created_at) FROM {STAGE}"


def move_staged(conn: Connection) -> int:
    """Move the staging table's rows into `predictions` (_MOVE); return how many were new."""
    low, high = conn.exec_driver_sql(_BOUNDS).one()
    if low is None:
        return 0
    bounds = {"since": low - DEDUP_WINDOW, "until": high + DEDUP_WINDOW}
    return len(conn.exec_driver_sql(_MOVE, bounds).all())


def copy_supported(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2"


def copy_insert(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Store `rows` (PredictionRecord.to_row() dicts) inside the caller's transaction; return
    how many were new. A driver error comes back as SQLAlchemy's (DBAPIError and its
    subclasses), as the INSERT path raises it, so the caller tells an outage from a bad row the
    same way."""
    return _copy_move(conn, io.StringIO(to_csv(rows)))


def copy_columns(conn: Connection, batch: PredictionColumns) -> int:
    """`copy_insert` for a columnar batch: the COPY text is built column by column
    (copy_text.py), with no Python object per row. Raises NotColumnar, before anything is
    sent, for a batch or a table layout the columnar text does not cover."""
    return _copy_move(conn, io.BytesIO(copy_text(batch, _COLUMNS)))


def _copy_move(conn: Connection, text: IO[str] | IO[bytes]) -> int:
    conn.exec_driver_sql(_CREATE)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(_COPY, text)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(
            _COPY, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from exc
    finally:
        cursor.close()
    return move_staged(conn)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as COPY's CSV: every value quoted, SQL NULL as an unquoted empty field (so an
    empty string stays an empty string), JSON columns as the same text the INSERT path
    stores (None there is JSON null, as SQLAlchemy's JSON type stores it)."""
    lines = []
    for row in rows:
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
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"

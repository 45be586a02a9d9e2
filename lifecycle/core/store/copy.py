"""PostgreSQL's bulk path for the prediction log: `COPY` a batch into a staging table, then
one `INSERT ... SELECT ... ON CONFLICT (request_id) DO NOTHING`, in one transaction.

COPY parses rows an order of magnitude faster than INSERT statements carrying the same values,
and the INSERT from the staging table keeps what the plain INSERT guaranteed: a request id
already stored (a replayed spool, a redelivered task) is skipped, and the statement returns the
ids it did insert. The staging table is a temporary table of the connection, emptied at every
commit.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lifecycle.core.store.tables import dumps, predictions

STAGE = "lifecycle_predictions_stage"
_COLUMNS = tuple(c.name for c in predictions.columns)
_JSON_COLUMNS = frozenset(c.name for c in predictions.columns if isinstance(c.type, sa.JSON))
_LIST = ", ".join(_COLUMNS)
_CREATE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} "
    f"(LIKE {predictions.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY {STAGE} ({_LIST}) FROM STDIN WITH (FORMAT csv)"
_MOVE = (
    f"INSERT INTO {predictions.name} ({_LIST}) SELECT {_LIST} FROM {STAGE} "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)


def copy_supported(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2"


def copy_insert(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Store `rows` (PredictionRecord.to_row() dicts) inside the caller's transaction; return
    how many were new. A driver error comes back as SQLAlchemy's (DBAPIError and its
    subclasses), as the INSERT path raises it, so the caller tells an outage from a bad row the
    same way."""
    conn.exec_driver_sql(_CREATE)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(_COPY, io.StringIO(to_csv(rows)))
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(
            _COPY, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from exc
    finally:
        cursor.close()
    return len(conn.exec_driver_sql(_MOVE).all())


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

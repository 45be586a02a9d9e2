"""PostgreSQL's multi-row INSERT path for drivers without COPY (and the benchmark's
reference): the batch goes into the connection's staging table by multi-row INSERT, then moves
with the COPY path's statement (copy.py), so both paths store a batch exactly once the same
way. A single row keeps its one INSERT ... SELECT (tables.insert_predictions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lifecycle.core.store.copy import _CREATE, STAGE, move_staged
from lifecycle.core.store.tables import predictions

_stage = predictions.to_metadata(sa.MetaData(), name=STAGE)
# Executed with a list of rows: SQLAlchemy's batched "insertmanyvalues", one cached statement.
_insert = sa.insert(_stage)


def staged_insert(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Store `rows` inside the caller's transaction; return how many were new."""
    conn.exec_driver_sql(_CREATE)
    conn.execute(_insert, list(rows))
    return move_staged(conn)

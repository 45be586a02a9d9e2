"""PostgreSQL's multi-row INSERT path for drivers without COPY (and the benchmark's
reference): the batch goes into the connection's staging table by multi-row INSERT, then moves
with the COPY path's statement (copy.py), so both paths store a batch exactly once the same
way. A single row keeps its one INSERT ... SELECT (tables.insert_predictions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lifecycle.core.store.copy import _CREATE, STAGE, flagged_range, move_staged
from lifecycle.core.store.tables import predictions

_stage = predictions.to_metadata(sa.MetaData(), name=STAGE)
_stage.append_column(sa.Column("recheck", sa.Boolean, nullable=False))
# Executed with a list of rows: SQLAlchemy's batched "insertmanyvalues", one cached statement.
_insert = sa.insert(_stage)


def staged_insert(conn: Connection, rows: Sequence[dict[str, Any]], recheck: Sequence[bool]) -> int:
    """Store `rows` (with each one's `recheck` flag) inside the caller's transaction; return
    how many were new."""
    conn.exec_driver_sql(_CREATE)
    staged = [{**row, "recheck": flag} for row, flag in zip(rows, recheck, strict=True)]
    conn.execute(_insert, staged)
    return move_staged(conn, flagged_range([row["created_at"] for row in rows], recheck))

"""PostgreSQL's per-chunk rows: a columnar batch whose request ids are numbered
(`<prefix><first_row + i>`: a REST request of many rows, a file job's chunk, a Spark
partition's batch) is stored as one row of `prediction_chunks` holding its n predictions as
JSON arrays (migration 0003).

One row per prediction cost the database about 22 µs of CPU per row whatever the write path
(docs/prediction-store.md): a 1,000,000-row file spent 20 s in PostgreSQL alone. One row per
chunk costs it the parse of a JSON array per column, about 1 µs per prediction. The read side
reads chunk rows expanded by the `prediction_values` view, one table at a time
(queries.per_table); `prediction_rows` is the whole log in the shape of `predictions`, and a
lookup by request id goes to the one chunk that can hold it (`lookup`).

Exactly once: a chunk is not stored when a stored chunk of the same prefix covers any of its
rows with the same created_at (a job stamped with its accepted time, scored again) or, for a
batch flagged `recheck`, with a created_at within DEDUP_WINDOW of its own; the key
(id_prefix, first_row, created_at) catches two writers of the same chunk at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lifecycle.core.store.columns import PredictionColumns
from lifecycle.core.store.copy_text import NotColumnar
from lifecycle.core.store.tables import DEDUP_WINDOW, as_utc, prediction_rows

TABLE = "prediction_chunks"
ROWS_VIEW = "prediction_chunk_rows"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

_COLUMNS = (
    "id_prefix",
    "first_row",
    "n",
    "created_at",
    "source",
    "model_name",
    "model_version",
    "run_id",
    "latency_ms",
    "feature_names",
    "class_labels",
    "features",
    "predictions",
    "labels",
    "probabilities",
)
# Parameters in a SELECT list are text to PostgreSQL: cast to the columns' types.
_TYPES = {
    "first_row": "bigint",
    "n": "integer",
    "created_at": "timestamptz",
    "latency_ms": "float8",
    "feature_names": "text[]",
    "class_labels": "text[]",
    "features": "json",
    "predictions": "json",
    "labels": "json",
    "probabilities": "json",
}
# One row of VALUES: a chunk's columns and its probe's bounds, cast to the columns' types.
_ROW = (
    "("
    + ", ".join(f"%s::{_TYPES.get(c, 'text')}" for c in _COLUMNS)
    + ", %s::timestamptz, %s::timestamptz)"
)
_LIST = ", ".join(_COLUMNS)
# Every chunk of a writer's batch in one statement: one round trip, where one per chunk
# waited for the GIL after each (the API's event loop holds it) and stored 20k rows/s. The
# probe's outer bounds are constants, so it opens only the partitions they span.
_INSERT = (
    f"INSERT INTO {TABLE} ({_LIST}) SELECT {_LIST} FROM (VALUES {{values}}) "
    f"AS v({_LIST}, since, until) "
    f"WHERE NOT EXISTS (SELECT 1 FROM {TABLE} s WHERE s.id_prefix = v.id_prefix "
    "AND s.first_row < v.first_row + v.n AND s.first_row + s.n > v.first_row "
    "AND s.created_at >= v.since AND s.created_at <= v.until "
    "AND s.created_at >= %s AND s.created_at <= %s) "
    "ON CONFLICT (id_prefix, first_row, created_at) DO NOTHING RETURNING n"
)


def insert_chunks(conn: Connection, batches: Sequence[PredictionColumns]) -> int:
    """Store numbered batches as chunk rows, in one statement inside the caller's
    transaction; return how many predictions were new (a chunk a stored chunk covers adds
    none). Raises NotColumnar, before anything is sent, for a batch whose ids are not
    numbered or whose values are not stored as a chunk."""
    rows = [_row(batch) for batch in batches]
    if not rows:
        return 0
    low, high = min(r[-2] for r in rows), max(r[-1] for r in rows)
    statement = _INSERT.replace("{values}", ", ".join([_ROW] * len(rows)))
    params = (*(value for row in rows for value in row), low, high)
    return sum(n for (n,) in conn.exec_driver_sql(statement, params).all())


def _row(batch: PredictionColumns) -> tuple[Any, ...]:
    if batch.numbered is None:
        raise NotColumnar("request ids are not numbered")
    prefix, first = batch.numbered
    at = as_utc(batch.created_at)
    window = DEDUP_WINDOW if batch.recheck else timedelta(0)
    values = {
        "id_prefix": prefix,
        "first_row": first,
        "n": len(batch),
        "created_at": at,
        "source": batch.source,
        "model_name": batch.model_name,
        "model_version": batch.model_version,
        "run_id": batch.run_id,
        "latency_ms": float(batch.latency_ms),
        "feature_names": list(batch.feature_names),
        "class_labels": None if batch.class_labels is None else list(batch.class_labels),
        "features": _floats(batch.features).decode(),
        "predictions": _values(batch.predictions).decode(),
        "labels": orjson.dumps([str(v) for v in np.asarray(batch.labels).tolist()]).decode(),
        "probabilities": (
            None
            if batch.probabilities is None or batch.class_labels is None
            else _floats(batch.probabilities).decode()
        ),
    }
    return (*(values[c] for c in _COLUMNS), at - window, at + window)


def _floats(matrix: np.ndarray) -> bytes:
    """A float matrix as a JSON array of arrays; NaN and infinities are null, as the row
    path stores them."""
    if matrix.dtype.kind != "f":
        raise NotColumnar(f"values of type {matrix.dtype} are not stored as a chunk")
    return orjson.dumps(np.ascontiguousarray(matrix, dtype=np.float64), option=_NUMPY)


def _values(values: np.ndarray) -> bytes:
    """A model's raw outputs as a JSON array, each as the row path's json.dumps writes it."""
    if values.dtype.kind in "iuf" and values.ndim == 1:
        return orjson.dumps(np.ascontiguousarray(values), option=_NUMPY)
    try:
        return orjson.dumps(values.tolist(), default=_plain)
    except TypeError as exc:
        raise NotColumnar(f"model outputs not stored as a chunk: {exc}") from exc


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def as_object(values: Any, names: Sequence[str] | None) -> dict[str, Any]:
    """A row's features (or probabilities) as an object: a chunk row's array zipped with its
    names; an object as it is; anything else, an empty object."""
    if names is not None and isinstance(values, list):
        return dict(zip(names, values, strict=True))
    return values if isinstance(values, dict) else {}


def as_record(row: Any) -> dict[str, Any]:
    """A `prediction_values` row (a mapping) with the columns of `predictions`: a chunk
    row's feature and probability arrays as objects, its names dropped."""
    record = dict(row)
    names, classes = record.pop("feature_names", None), record.pop("class_labels", None)
    if names is not None:
        record["features"] = as_object(record["features"], names)
    if classes is not None and isinstance(record["probabilities"], list):
        record["probabilities"] = as_object(record["probabilities"], classes)
    return record


def numbered(request_ids: Any, prefix: str) -> tuple[str, int] | None:
    """(prefix, first) when the ids are `prefix` followed by first, first + 1, ...: the
    chunk layout's ids. None otherwise (the batch is stored as rows)."""
    ids = [str(i) for i in request_ids]
    if not ids or not all(i.startswith(prefix) for i in ids):
        return None
    numbers = [row_number(i[len(prefix) :]) for i in ids]
    if any(n is None for n in numbers):
        return None
    if (np.diff(np.array(numbers, dtype=np.int64)) != 1).any():
        return None
    return prefix, int(numbers[0] or 0)


def chunk_key(request_id: str) -> tuple[str, int] | None:
    """Where a request id would sit in a chunk: (prefix, row number), split after its last
    '-' (file jobs and Spark jobs number their rows `<job id>-<row>`)."""
    head, dash, tail = request_id.rpartition("-")
    number = row_number(tail)
    if not dash or number is None:
        return None
    return head + dash, number


def row_number(text: str) -> int | None:
    """A row number as ids spell it: ASCII digits, no leading zero, within a bigint."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text) if text == "0" or text[0] != "0" else None


def lookup(request_id: str) -> sa.Select[Any] | None:
    """The statement that finds a request id among chunk rows, by the chunk key's index: the
    columns of `prediction_rows`. None for an id no chunk can hold."""
    key = chunk_key(request_id)
    if key is None:
        return None
    prefix, row = key
    view = sa.table(
        ROWS_VIEW,
        sa.column("id_prefix"),
        sa.column("first_row"),
        sa.column("n"),
        *(sa.column(c.name, c.type) for c in prediction_rows.columns),
    )
    v = view.c
    return sa.select(*(v[c.name] for c in prediction_rows.columns)).where(
        v.id_prefix == prefix,
        v.first_row <= row,
        v.first_row + v.n > row,
        v.request_id == request_id,
    )

"""The prediction store's record type, tables and dialect-specific SQL (PostgreSQL, SQLite)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateIndex
from sqlalchemy.sql.elements import ColumnElement

from lifecycle.core.errors import ConfigError

SOURCES = ("rest", "async", "batch")


@dataclass(frozen=True)
class PredictionRecord:
    request_id: str
    created_at: datetime
    source: str
    model_name: str
    model_version: str
    run_id: str | None
    features: dict[str, Any]
    prediction: Any
    label: str | None
    probabilities: dict[str, float] | None
    latency_ms: float
    # Whether storing the row looks its request id up within DEDUP_WINDOW (PostgreSQL,
    # docs/prediction-store.md "Exactly once"). False only where every copy of the row that
    # can ever be written carries the same created_at, so the key alone catches it: a request
    # id the server generated, a file job stamped with the time it was accepted. Not a column.
    recheck: bool = field(default=True, compare=False)

    def to_row(self) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in _FIELDS}
        row["created_at"] = as_utc(self.created_at)
        return row

    def to_json_line(self) -> bytes:
        row = self.to_row()
        row["created_at"] = row["created_at"].isoformat()
        if not self.recheck:
            # A replay then skips the lookup too; a line without it (an earlier release's)
            # is looked up.
            row["recheck"] = False
        return dumps(row).encode() + b"\n"

    @classmethod
    def from_row(cls, row: Any) -> PredictionRecord:
        values = {name: row[name] for name in _FIELDS}
        created = values["created_at"]
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        values["created_at"] = as_utc(created)
        values["latency_ms"] = float(values["latency_ms"])
        recheck = row.get("recheck", True) if isinstance(row, dict) else True
        return cls(**values, recheck=recheck is not False)


# The stored columns: every field but the flag.
_FIELDS = tuple(name for name in PredictionRecord.__dataclass_fields__ if name != "recheck")


def as_utc(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; every stored timestamp is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_default(value: Any) -> Any:
    # Model outputs arrive as numpy scalars and arrays; store them as plain JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """JSON both databases accept: PostgreSQL rejects NaN and Infinity, so they become null."""
    try:
        return json.dumps(value, default=_json_default, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(json.loads(json.dumps(value, default=_json_default))))


_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
metadata = sa.MetaData()

# The tables as the queries see them. Their DDL is the migrations' (migrations/, migrate.py):
# on PostgreSQL `predictions` is partitioned by day and keyed by (request_id, created_at)
# (partitions.py); on SQLite it is one plain table keyed by request_id.
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("request_id", sa.String(255), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("features", _JSON, nullable=False),
    sa.Column("prediction", _JSON),
    sa.Column("label", sa.String(255)),
    sa.Column("probabilities", _JSON),
    sa.Column("latency_ms", sa.Float, nullable=False),
    # The read side (read.py): one model's rows by time, newest first with the request id as
    # tie-break (windows, keyset pages), and the same within one version.
    sa.Index("ix_predictions_model_time", "model_name", "created_at", "request_id"),
    sa.Index("ix_predictions_model_version_time", "model_name", "model_version", "created_at"),
)

# Views (migration 0003), not in `metadata`: a view has no indexes of its own to ensure.
# `prediction_rows`: the columns of `predictions`, with the rows of `prediction_chunks` on
# PostgreSQL (chunks.py); on SQLite, `predictions`. For lookups and SQL users.
_views = sa.MetaData()
prediction_rows = sa.Table(
    "prediction_rows", _views, *(column._copy() for column in predictions.columns)
)
# `prediction_values`, what the read side reads (queries.py, read.py): the same rows, but a
# chunk row's features and probabilities are JSON arrays with their names beside them
# (`feature_names`, `class_labels`; null for a plain row, whose values are objects), which
# `chunks.as_objects` turns into objects.
_NAMES = sa.ARRAY(sa.Text).with_variant(sa.JSON(), "sqlite")
prediction_values = sa.Table(
    "prediction_values",
    _views,
    *(
        sa.Column(column.name, sa.JSON()) if isinstance(column.type, sa.JSON) else column._copy()
        for column in predictions.columns
        if column.name != "latency_ms"
    ),
    sa.Column("feature_names", _NAMES),
    sa.Column("class_labels", _NAMES),
    predictions.c.latency_ms._copy(),
)
# PostgreSQL: the chunk rows of `prediction_values`, with their chunk's key.
prediction_chunk_values = sa.Table(
    "prediction_chunk_values",
    _views,
    *(column._copy() for column in prediction_values.columns),
    sa.Column("id_prefix", sa.String(255)),
    sa.Column("first_row", sa.BigInteger),
    sa.Column("n", sa.Integer),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("request_id", sa.String(255), primary_key=True),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def ensure_read_indexes(connection: Connection) -> None:
    """Create the read side's indexes (those of the table definitions above) that the database
    lacks: dropped by hand, or never built on a database made before they existed. Nothing
    runs when none is missing (no DDL, no lock on a normal start); IF NOT EXISTS for two
    processes starting at once."""
    inspector = sa.inspect(connection)
    for table in metadata.sorted_tables:
        present = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in present:
                connection.execute(CreateIndex(index, if_not_exists=True))


# Exactly once on PostgreSQL, where the key must include the partition key: a row is not
# stored when a row with the same request id is stored with a created_at within this much of
# its own (docs/prediction-store.md, "Exactly once"). Wider costs one more partition probed
# per row and per day.
DEDUP_WINDOW = timedelta(days=1)
DEDUP_INTERVAL_SQL = f"interval '{int(DEDUP_WINDOW.total_seconds())} seconds'"


def dedup_bounds(created_at: datetime) -> dict[str, datetime]:
    """The parameters of insert_predictions' probe (PostgreSQL) for a row made at created_at:
    constants, so that the planner keeps only the partitions they span."""
    at = as_utc(created_at)
    return {"dedup_since": at - DEDUP_WINDOW, "dedup_until": at + DEDUP_WINDOW}


def _stored_near(request_id: ColumnElement[Any]) -> sa.Exists:
    """A stored row with this request id and a created_at within dedup_bounds."""
    p = predictions.alias("stored")
    stamp = sa.DateTime(timezone=True)
    return sa.exists().where(
        p.c.request_id == request_id,
        p.c.created_at >= sa.bindparam("dedup_since", type_=stamp),
        p.c.created_at <= sa.bindparam("dedup_until", type_=stamp),
    )


def make_engine(database_url: str) -> Engine:
    """An engine for PostgreSQL or SQLite; no connection is opened here."""
    try:
        url = sa.make_url(database_url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"database_url: not a SQLAlchemy URL: {database_url!r}") from exc
    backend = url.get_backend_name()
    if backend == "sqlite":
        # Several processes write the same file: WAL lets readers run beside the writer and
        # the busy timeout makes a writer wait for the lock instead of failing at once.
        engine = sa.create_engine(
            url, json_serializer=dumps, connect_args={"timeout": 30, "check_same_thread": False}
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        connect_args: dict[str, Any] = {}
        if url.get_driver_name() == "psycopg2":
            # An unreachable host must fail fast so rows go to the spool, not wait on TCP; and
            # keepalives notice a server that vanished under an open connection.
            defaults = {
                "connect_timeout": 5,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            }
            connect_args = {k: v for k, v in defaults.items() if k not in url.query}
        return sa.create_engine(
            url, json_serializer=dumps, pool_pre_ping=True, connect_args=connect_args
        )
    raise ConfigError(
        f"database_url: the prediction store supports postgresql and sqlite, not {backend!r}"
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def max_rows_per_insert(engine: Engine) -> int:
    """SQLite binds at most 32766 parameters per statement; psycopg2 inlines them client-side."""
    if engine.dialect.name == "sqlite":
        return 32766 // len(predictions.columns)
    return 10_000


def dialect_insert(engine: Engine, table: sa.Table) -> Any:
    """INSERT with the dialect's ON CONFLICT clauses (PostgreSQL and SQLite alike)."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_predictions(engine: Engine) -> sa.Executable:
    """INSERT that skips request ids already stored (replays and redeliveries never
    duplicate), returning the ids it did insert.

    SQLite: ON CONFLICT on the request id; executed with a list of rows it runs as
    SQLAlchemy's batched "insertmanyvalues", one cached statement. PostgreSQL: the key is
    (request_id, created_at), so a redelivered row scored again at a later time is skipped by
    a probe for its request id within DEDUP_WINDOW (as the COPY path's statement does,
    copy.py); each row needs `dedup_bounds` among its parameters."""
    if engine.dialect.name != "postgresql":
        return (
            dialect_insert(engine, predictions)
            .on_conflict_do_nothing(index_elements=["request_id"])
            .returning(predictions.c.request_id)
        )
    values = {c.name: sa.cast(sa.bindparam(c.name, type_=c.type), c.type) for c in predictions.c}
    select = sa.select(*values.values()).where(~_stored_near(values["request_id"]))
    return (
        postgresql.insert(predictions)
        .from_select(list(values), select)
        .on_conflict_do_nothing(index_elements=["request_id", "created_at"])
        .returning(predictions.c.request_id)
    )


def insert_keyed_prediction() -> sa.Executable:
    """PostgreSQL's one-row INSERT for a row not flagged `recheck`: the key alone."""
    return (
        postgresql.insert(predictions)
        .on_conflict_do_nothing(index_elements=["request_id", "created_at"])
        .returning(predictions.c.request_id)
    )


def upsert_feedback(engine: Engine, request_id: str, label: str) -> sa.Executable:
    """The last feedback for a request id wins."""
    stmt = dialect_insert(engine, feedback).values(
        request_id=request_id, label=label, created_at=datetime.now(UTC)
    )
    return stmt.on_conflict_do_update(
        index_elements=["request_id"],
        set_={"label": stmt.excluded.label, "created_at": stmt.excluded.created_at},
    )


def feedback_counts(model_name: str) -> sa.Select[Any]:
    """(version, predicted label, true label, count) over predictions that got feedback."""
    p, f = prediction_values.c, feedback.c
    return (
        sa.select(p.model_version, p.label, f.label, sa.func.count())
        .select_from(prediction_values.join(feedback, p.request_id == f.request_id))
        .where(p.model_name == model_name, p.label.is_not(None))
        .group_by(p.model_version, p.label, f.label)
    )


def classification_stats(
    counts: Iterable[tuple[str, str, str, int]],
) -> dict[str, dict[str, float]]:
    """Accuracy and macro precision per version, as scikit-learn computes them with
    zero_division=0: the macro average runs over every label seen predicted or true."""
    by_version: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for version, predicted, true, n in counts:
        by_version[version].append((predicted, true, int(n)))
    stats: dict[str, dict[str, float]] = {}
    for version, cells in by_version.items():
        total = sum(n for _, _, n in cells)
        correct = sum(n for p, t, n in cells if p == t)
        labels = {p for p, _, _ in cells} | {t for _, t, _ in cells}
        precisions = []
        for label in labels:
            n_predicted = sum(n for p, _, n in cells if p == label)
            hits = sum(n for p, t, n in cells if p == label and t == label)
            precisions.append(hits / n_predicted if n_predicted else 0.0)
        stats[version] = {
            "n": float(total),
            "accuracy": correct / total,
            "precision_macro": sum(precisions) / len(precisions),
        }
    return stats

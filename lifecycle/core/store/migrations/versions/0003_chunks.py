"""Per-chunk rows for columnar batches, and the views that read them with the other rows.

PostgreSQL: `prediction_chunks` holds one row per stored chunk of a file job (or a Spark
partition's batch): its n predictions as JSON arrays, their request ids numbered from
`first_row` after `id_prefix` (chunks.py). It is partitioned by day like `predictions`, and
its arrays are stored uncompressed (STORAGE EXTERNAL): compressing a chunk with pglz cost more
database time than parsing it. `prediction_chunk_values` expands a chunk into one row per
prediction, its features and probabilities as JSON arrays beside the chunk's names;
`prediction_chunk_rows` turns those into the columns of `predictions` (plus the chunk key, for
lookups by request id), and `prediction_rows` is both kinds of row, for SQL users.
`prediction_values` is both kinds in the first shape: what the read side reads, since building
a JSON object per row in the database cost about 4 µs a row. A chunk without probabilities
reads as JSON null in `prediction_rows`, as the row path stores it. SQLite stores every row in
`predictions`: both views are that table.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    "request_id, created_at, source, model_name, model_version, run_id, features, "
    "prediction, label, probabilities, latency_ms"
)
_ARRAYS = ("features", "predictions", "labels", "probabilities")


def _object(names: str, values: str) -> str:
    """A JSON object from an array of names and a JSON array of values, as jsonb."""
    return (
        f"(SELECT jsonb_object_agg(k, v) FROM ROWS FROM (unnest({names}), "
        f"json_array_elements({values})) AS t(k, v))"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute(f"CREATE VIEW prediction_rows AS SELECT {COLUMNS} FROM predictions")
        op.execute(
            "CREATE VIEW prediction_values AS SELECT request_id, created_at, source, "
            "model_name, model_version, run_id, features, NULL AS feature_names, prediction, "
            "label, probabilities, NULL AS class_labels, latency_ms FROM predictions"
        )
        return
    op.execute(
        "CREATE TABLE prediction_chunks ("
        "id_prefix VARCHAR(255) NOT NULL, first_row BIGINT NOT NULL, n INTEGER NOT NULL, "
        "created_at TIMESTAMP WITH TIME ZONE NOT NULL, source VARCHAR(16) NOT NULL, "
        "model_name VARCHAR(255) NOT NULL, model_version VARCHAR(64) NOT NULL, "
        "run_id VARCHAR(64), latency_ms DOUBLE PRECISION NOT NULL, "
        "feature_names TEXT[] NOT NULL, class_labels TEXT[], "
        "features JSON NOT NULL, predictions JSON NOT NULL, labels JSON NOT NULL, "
        "probabilities JSON, "
        "CONSTRAINT prediction_chunks_pkey PRIMARY KEY (id_prefix, first_row, created_at)"
        ") PARTITION BY RANGE (created_at)"
    )
    op.execute(
        "ALTER TABLE prediction_chunks "
        + ", ".join(f"ALTER COLUMN {name} SET STORAGE EXTERNAL" for name in _ARRAYS)
    )
    op.execute(
        "CREATE INDEX ix_prediction_chunks_model_time ON prediction_chunks (model_name, created_at)"
    )
    op.execute(
        "CREATE INDEX ix_prediction_chunks_model_version_time ON prediction_chunks "
        "(model_name, model_version, created_at)"
    )
    op.execute("CREATE TABLE prediction_chunks_default PARTITION OF prediction_chunks DEFAULT")
    op.execute(
        "CREATE VIEW prediction_chunk_values AS SELECT c.id_prefix, c.first_row, c.n, "
        "(c.id_prefix || (c.first_row + r.i - 1)::text)::varchar(255) AS request_id, "
        "c.created_at, c.source, c.model_name, c.model_version, c.run_id, "
        "r.features, c.feature_names, r.prediction, "
        "r.label::varchar(255) AS label, r.probabilities, "
        "c.class_labels, c.latency_ms "
        "FROM prediction_chunks c CROSS JOIN LATERAL ROWS FROM ("
        "json_array_elements(c.features), json_array_elements(c.predictions), "
        "json_array_elements_text(c.labels), json_array_elements(c.probabilities)"
        ") WITH ORDINALITY AS r(features, prediction, label, probabilities, i)"
    )
    op.execute(
        "CREATE VIEW prediction_chunk_rows AS SELECT id_prefix, first_row, n, request_id, "
        "created_at, source, model_name, model_version, run_id, "
        f"{_object('feature_names', 'features')} AS features, "
        "prediction::jsonb AS prediction, label, "
        "CASE WHEN class_labels IS NOT NULL THEN "
        f"{_object('class_labels', 'probabilities')} ELSE 'null'::jsonb END "
        "AS probabilities, latency_ms FROM prediction_chunk_values"
    )
    op.execute(
        f"CREATE VIEW prediction_rows AS SELECT {COLUMNS} FROM predictions "
        f"UNION ALL SELECT {COLUMNS} FROM prediction_chunk_rows"
    )
    op.execute(
        "CREATE VIEW prediction_values AS SELECT request_id, created_at, source, model_name, "
        "model_version, run_id, features::json AS features, NULL::text[] AS feature_names, "
        "prediction::json AS prediction, label, probabilities::json AS probabilities, "
        "NULL::text[] AS class_labels, latency_ms FROM predictions "
        "UNION ALL SELECT request_id, created_at, source, model_name, model_version, run_id, "
        "features, feature_names, prediction, label, probabilities, class_labels, "
        "latency_ms FROM prediction_chunk_values"
    )


def downgrade() -> None:
    op.execute("DROP VIEW prediction_values")
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP VIEW prediction_rows")
        return
    op.execute(
        f"INSERT INTO predictions ({COLUMNS}) SELECT {COLUMNS} FROM prediction_chunk_rows "
        "ON CONFLICT (request_id, created_at) DO NOTHING"
    )
    op.execute("DROP VIEW prediction_rows")
    op.execute("DROP VIEW prediction_chunk_rows")
    op.execute("DROP VIEW prediction_chunk_values")
    op.execute("DROP TABLE prediction_chunks")

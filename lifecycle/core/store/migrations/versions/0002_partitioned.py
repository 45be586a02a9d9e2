"""PostgreSQL: `predictions` partitioned by day on created_at, keyed by (request_id,
created_at), with a DEFAULT partition; every existing row moved over in the migration's one
transaction. The index on (model_name, model_version) alone goes (the version-and-time index
starts with the same columns), and so does the one on created_at alone (every read filters
on the model first). SQLite keeps its plain table and loses the redundant index.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from lifecycle.core.store.partitions import DEFAULT, ensure_day_partitions

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = (
    "request_id, created_at, source, model_name, model_version, run_id, features, "
    "prediction, label, probabilities, latency_ms"
)
_OLD = "predictions_unpartitioned"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_predictions_model")
        return
    bind = op.get_bind()
    op.execute(f"ALTER TABLE predictions RENAME TO {_OLD}")
    # Index and constraint names are per schema: free them for the new table.
    for (name,) in bind.execute(
        sa.text(
            "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid "
            "WHERE x.indrelid = to_regclass(:old) AND c.oid IS NULL"
        ),
        {"old": _OLD},
    ).all():
        op.execute(f'DROP INDEX "{name}"')
    for (name,) in bind.execute(
        sa.text("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:old)"),
        {"old": _OLD},
    ).all():
        op.execute(f'ALTER TABLE {_OLD} RENAME CONSTRAINT "{name}" TO "{_OLD}_{name}"')
    op.execute(
        "CREATE TABLE predictions ("
        "request_id VARCHAR(255) NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL, "
        "source VARCHAR(16) NOT NULL, model_name VARCHAR(255) NOT NULL, "
        "model_version VARCHAR(64) NOT NULL, run_id VARCHAR(64), features JSONB NOT NULL, "
        "prediction JSONB, label VARCHAR(255), probabilities JSONB, "
        "latency_ms DOUBLE PRECISION NOT NULL, "
        "CONSTRAINT predictions_pkey PRIMARY KEY (request_id, created_at)"
        ") PARTITION BY RANGE (created_at)"
    )
    op.execute(
        "CREATE INDEX ix_predictions_model_time ON predictions (model_name, created_at, request_id)"
    )
    op.execute(
        "CREATE INDEX ix_predictions_model_version_time ON predictions "
        "(model_name, model_version, created_at)"
    )
    op.execute(f"CREATE TABLE {DEFAULT} PARTITION OF predictions DEFAULT")
    days = bind.execute(
        sa.text(f"SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM {_OLD}")
    ).scalars()
    ensure_day_partitions(bind, list(days))
    op.execute(f"INSERT INTO predictions ({_COLUMNS}) SELECT {_COLUMNS} FROM {_OLD}")
    op.execute(f"DROP TABLE {_OLD}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_predictions_model "
            "ON predictions (model_name, model_version)"
        )
        return
    op.execute(f"ALTER TABLE predictions RENAME TO {_OLD}")
    op.execute(f"ALTER TABLE {_OLD} RENAME CONSTRAINT predictions_pkey TO {_OLD}_pkey")
    for name in ("ix_predictions_model_time", "ix_predictions_model_version_time"):
        op.execute(f"DROP INDEX {name}")
    op.execute(
        "CREATE TABLE predictions ("
        "request_id VARCHAR(255) PRIMARY KEY, created_at TIMESTAMP WITH TIME ZONE NOT NULL, "
        "source VARCHAR(16) NOT NULL, model_name VARCHAR(255) NOT NULL, "
        "model_version VARCHAR(64) NOT NULL, run_id VARCHAR(64), features JSONB NOT NULL, "
        "prediction JSONB, label VARCHAR(255), probabilities JSONB, "
        "latency_ms DOUBLE PRECISION NOT NULL)"
    )
    op.execute(
        f"INSERT INTO predictions ({_COLUMNS}) SELECT {_COLUMNS} FROM {_OLD} "
        "ORDER BY created_at ON CONFLICT (request_id) DO NOTHING"
    )
    op.execute(f"DROP TABLE {_OLD}")
    op.execute("CREATE INDEX ix_predictions_created_at ON predictions (created_at)")
    op.execute("CREATE INDEX ix_predictions_model ON predictions (model_name, model_version)")
    op.execute(
        "CREATE INDEX ix_predictions_model_time ON predictions (model_name, created_at, request_id)"
    )
    op.execute(
        "CREATE INDEX ix_predictions_model_version_time ON predictions "
        "(model_name, model_version, created_at)"
    )

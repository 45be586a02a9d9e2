"""The prediction store as the first releases created it: one plain `predictions` table keyed
by request id, and `feedback`.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "predictions",
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
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_model", "predictions", ["model_name", "model_version"])
    op.create_index(
        "ix_predictions_model_time", "predictions", ["model_name", "created_at", "request_id"]
    )
    op.create_index(
        "ix_predictions_model_version_time",
        "predictions",
        ["model_name", "model_version", "created_at"],
    )
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(255), primary_key=True),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("predictions")

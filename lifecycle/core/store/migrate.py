"""Schema migrations of the prediction store's own tables (predictions, feedback), with Alembic.

The scripts live in `migrations/` inside the package; Alembic's configuration is built here, in
code, so no alembic.ini is needed at run time. The version is kept in its own table
(`lifecycle_store_version`), so another Alembic user of the same database (MLflow, Airflow)
is never confused with it, and the other tables of the database (report index, webhook
deliveries, promotions, task records, Celery's) are neither touched nor compared.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

VERSION_TABLE = "lifecycle_store_version"
MIGRATIONS = Path(__file__).with_name("migrations")
FIRST = "0001"
HEAD = "head"
# pg_advisory_xact_lock key of the prediction store's schema changes ("lcschema" in ASCII).
SCHEMA_LOCK = 0x6C63736368656D61


def _config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def current(conn: Connection) -> str | None:
    """The revision the database is at; None before any migration ran."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine, revision: str = HEAD) -> None:
    """Bring the tables to `revision`, in one transaction. On PostgreSQL a transaction-level
    advisory lock makes processes starting at once take turns: the second finds the work
    done. A database made by a release before the migrations (tables there, no version) is
    first stamped at the first revision, which is its shape."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        config = _config(conn)
        if current(conn) is None and sa.inspect(conn).has_table("predictions"):
            command.stamp(config, FIRST)
        command.upgrade(config, revision)

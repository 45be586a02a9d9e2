"""Alembic's environment for the prediction store: always online, on the connection (and the
transaction) that migrate.upgrade opened and locked; never reads alembic.ini."""

from alembic import context

from lifecycle.core.store.migrate import VERSION_TABLE

context.configure(
    connection=context.config.attributes["connection"],
    version_table=VERSION_TABLE,
    target_metadata=None,
)
with context.begin_transaction():
    context.run_migrations()

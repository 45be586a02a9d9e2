"""Alembic migrations of the prediction store's tables (predictions, feedback); run by
lifecycle/core/store/migrate.py, which builds Alembic's configuration in code."""

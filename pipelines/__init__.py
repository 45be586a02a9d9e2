"""Pipelines: Airflow DAGs (pipelines/dags/, run by Airflow in its own virtualenv) and the
Lifecycle code their tasks run in the project's virtualenv (this package)."""

-- The MLflow tracking server keeps its own database beside the application's.
CREATE DATABASE mlflow OWNER lifecycle;
-- Airflow's metadata database: '<name>_airflow' beside the application's, the name the
-- embedded Airflow derives too (pipelines/airflow_env.py).
CREATE DATABASE lifecycle_airflow OWNER lifecycle;

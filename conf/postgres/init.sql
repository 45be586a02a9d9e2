-- The MLflow tracking server keeps its own database beside the application's.
CREATE DATABASE mlflow OWNER lifecycle;

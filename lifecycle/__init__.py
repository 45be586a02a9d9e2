"""Lifecycle: MLflow-centred experiment-to-serving."""

__version__ = "0.1.0"

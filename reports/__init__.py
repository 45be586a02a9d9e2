"""Drift and live-quality reports (Evidently) over the prediction log: docs/monitoring.md."""

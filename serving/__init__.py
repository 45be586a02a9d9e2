"""Serving: the REST API (FastAPI), its metrics, webhook receiver and composition root."""

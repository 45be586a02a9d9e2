"""The command line of the MLflow tracking server for the configured backend."""

from __future__ import annotations

import sys

from lifecycle.core.settings import Settings


def server_command(settings: Settings) -> list[str]:
    backend = settings.resolved_backend_store_uri()
    artifacts = settings.resolved_artifacts_destination()
    if backend.startswith("sqlite:///"):
        settings.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--serve-artifacts",
        "--host",
        settings.tracking_host,
        "--port",
        str(settings.tracking_port),
        "--workers",
        str(settings.tracking_workers),
    ]

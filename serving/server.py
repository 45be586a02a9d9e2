"""`lifecycle serve`: uvicorn with uvloop and httptools, access log off, N workers.

Access logs cost 15-25 % of throughput here, and uvicorn without its speedups nearly halves
it (see docs/benchmarks.md). With several workers, metrics go through prometheus-client's
multiprocess mode in a fresh directory, so a scrape on any worker sums them all.
"""

from __future__ import annotations

import os
import tempfile

from lifecycle.core.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def run(settings: Settings, host: str, port: int, workers: int) -> None:
    if workers > 1:
        # A fresh directory per run: files left by an earlier run would be summed in.
        base = settings.resolved_data_dir()
        base.mkdir(parents=True, exist_ok=True)
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="prometheus-", dir=base)
    # Progress bars of model downloads would fill the server log with carriage returns.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import uvicorn

    uvicorn.run(
        "serving.asgi:build",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )

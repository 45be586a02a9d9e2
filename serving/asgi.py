"""Composition root for uvicorn workers: `uvicorn --factory serving.asgi:build`.

Each worker process calls `build()` once: settings are read here, and every worker gets its
own runtime (holder, reconciler, prediction store, metrics; the same wiring as the Celery
worker) and its own Celery client.
"""

from __future__ import annotations

import logging
import sys

from fastapi import FastAPI

from lifecycle.core.settings import Settings
from serving.api.app import create_app
from serving.metrics import Metrics, multiprocess_dir
from serving.wiring import Runtime
from serving.worker import make_celery


def build() -> FastAPI:
    # The prediction-store writer and the reconciler are Python threads: when the event loop
    # releases the GIL (numpy, I/O) it can wait a whole switch interval to get it back. 5 ms
    # (the default) shows up directly in the latency tail; 0.5 ms keeps it short.
    sys.setswitchinterval(0.0005)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    runtime = Runtime.from_settings(settings, Metrics(multiprocess_dir()))
    return create_app(
        settings,
        runtime.holder,
        runtime.store,
        reconciler=runtime.reconciler,
        metrics=runtime.metrics,
        celery=make_celery(settings),
    )

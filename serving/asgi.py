"""Composition root for uvicorn workers: `uvicorn --factory serving.asgi:build`.

Each worker process calls `build()` once: settings are read here, and every worker gets its
own holder, reconciler (so each follows the registry on its own) and prediction store.
"""

from __future__ import annotations

import logging
import sys

from fastapi import FastAPI

from lifecycle.model import ModelHolder, Reconciler
from lifecycle.settings import Settings
from lifecycle.store import PredictionStore
from serving.api.app import create_app
from serving.metrics import Metrics, multiprocess_dir


def build() -> FastAPI:
    # The prediction-store writer and the reconciler are Python threads: when the event loop
    # releases the GIL (numpy, I/O) it can wait a whole switch interval to get it back. 5 ms
    # (the default) shows up directly in the latency tail; 0.5 ms keeps it short.
    sys.setswitchinterval(0.0005)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    metrics = Metrics(multiprocess_dir())
    holder = ModelHolder.from_settings(settings, observer=metrics)
    reconciler = Reconciler(holder, settings.poll_interval)
    store = PredictionStore.from_settings(settings, observer=metrics)
    return create_app(settings, holder, store, reconciler=reconciler, metrics=metrics)

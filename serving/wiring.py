"""How a serving process is wired: one place builds its collaborators from settings.

The API (`serving.asgi`) and the Celery worker (`serving.worker`) build the same `Runtime`:
a holder that follows the registry, its reconciler, the prediction store and the metrics that
observe both. The API passes the runtime's parts to `create_app`; the worker's tasks call the
plain functions of `serving.async_scoring` and `serving.batch_files` with it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionStore
from serving.inference import Inference
from serving.metrics import Metrics
from serving.runtime import LoadedModel, ModelHolder, Reconciler
from serving.runtime.probe import fail_fast_http


@dataclass
class Runtime:
    """One process's scoring collaborators: the holder that follows the registry, and the store."""

    settings: Settings
    holder: ModelHolder
    reconciler: Reconciler
    store: PredictionStore
    metrics: Metrics

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> Runtime:
        fail_fast_http(settings.tracking_timeout)
        holder = ModelHolder.from_settings(settings, observer=metrics)
        return cls(
            settings,
            holder,
            Reconciler(holder, settings.poll_interval),
            PredictionStore.from_settings(settings, observer=metrics),
            metrics,
        )

    def start(self) -> None:
        # Only the reconciler runs in the background: writes are synchronous (store.write), so
        # a task is acknowledged only after its predictions are in the database.
        self.reconciler.start()

    def stop(self) -> None:
        self.reconciler.stop()

    def observe(self, result: Inference) -> None:
        self.metrics.observe_predictions(result.model, result.labels)

    def model(self) -> LoadedModel:
        """The current model; before the first load, try one now instead of failing at once.

        The holder's lock makes a concurrent reconcile wait and then find the model loaded.
        ModelUnavailable (no version, registry down) is left to the caller's retry policy.
        """
        if self.holder.current is None:
            self.holder.reconcile()
        return self.holder.get()


class RuntimeCell:
    """A lazily built Runtime per process: prefork children build their own after the fork."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._runtime: Runtime | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> Runtime:
        with self._lock:
            if self._runtime is None or self._pid != os.getpid():
                runtime = Runtime.from_settings(self._settings, Metrics())
                runtime.start()
                self._runtime, self._pid = runtime, os.getpid()
            return self._runtime

    def stop(self) -> None:
        with self._lock:
            if self._runtime is not None and self._pid == os.getpid():
                self._runtime.stop()
            self._runtime = None

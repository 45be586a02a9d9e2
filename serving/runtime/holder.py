"""The served model: one immutable snapshot, replaced only by a version that loaded and
passed its smoke test.

A new version is loaded and tested completely before a single reference assignment makes it
current, so a request that already holds the old snapshot finishes on it and no request sees
a half-loaded model (MLServer's `_reload_model` pattern).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import mlflow
from mlflow.tracking import MlflowClient

from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from serving.runtime.loader import LoadedModel, load_version
from serving.runtime.probe import (
    MlflowRegistryProbe,
    RegistryProbe,
    RegistryUnavailable,
)
from serving.runtime.target import ModelTarget, VersionRef

log = logging.getLogger(__name__)


class ModelUnavailable(LifecycleError):
    status_code = 503


class SwapObserver(Protocol):
    def swapped(self, model: LoadedModel, previous: LoadedModel | None, seconds: float) -> None: ...

    def swap_failed(self, name: str, version: str, reason: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What one reconcile did: loaded, unchanged, pending, failed, skipped, empty, degraded."""

    action: str
    version: str | None = None
    detail: str | None = None


@dataclass
class _Failure:
    version: str
    retry_at: float
    attempts: int


Loader = Callable[[VersionRef, ModelTarget], LoadedModel]


class ModelHolder:
    def __init__(
        self,
        target: ModelTarget,
        probe: RegistryProbe,
        loader: Loader = load_version,
        observer: SwapObserver | None = None,
        failure_backoff: float = 30.0,
        max_failure_backoff: float = 600.0,
    ) -> None:
        self.target = target
        self._probe = probe
        self._loader = loader
        self._observer = observer
        self._failure_backoff = failure_backoff
        self._max_failure_backoff = max_failure_backoff
        self._current: LoadedModel | None = None
        self._failure: _Failure | None = None
        self._lock = threading.Lock()
        self.registry_error: str | None = None
        self.last_error: str | None = None
        self.last_check: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings, observer: SwapObserver | None = None) -> ModelHolder:
        uri = settings.resolved_tracking_uri()
        # Model downloads resolve models:/ URIs through MLflow's global registry URI.
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        return cls(
            ModelTarget.from_settings(settings),
            MlflowRegistryProbe(MlflowClient(tracking_uri=uri, registry_uri=uri)),
            observer=observer,
        )

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def get(self) -> LoadedModel:
        model = self._current
        if model is None:
            raise ModelUnavailable(
                f"no model loaded yet for {self.target.describe()}"
                + (f" ({self.last_error})" if self.last_error else "")
            )
        return model

    def status(self) -> dict[str, Any]:
        failure = self._failure
        return {
            "target": self.target.describe(),
            "registry": "degraded" if self.registry_error else "ok",
            "registry_error": self.registry_error,
            "last_check": self.last_check.isoformat() if self.last_check else None,
            "last_error": self.last_error,
            "failed_version": failure.version if failure else None,
        }

    def reconcile(self) -> Outcome:
        with self._lock:
            return self._reconcile()

    def _reconcile(self) -> Outcome:
        try:
            ref = self._probe.resolve(self.target)
        except RegistryUnavailable as exc:
            self.registry_error = exc.message
            return Outcome("degraded", detail=exc.message)
        self.registry_error = None
        self.last_check = datetime.now(UTC)
        if ref is None:
            self.last_error = f"{self.target.describe()} points at no version"
            return Outcome("empty", detail=self.last_error)
        current = self._current
        if current is not None and current.name == ref.name and current.version == ref.version:
            if current.stage != ref.stage:
                # Same artifacts under a new stage label: relabel without reloading.
                self._current = dataclasses.replace(current, stage=ref.stage)
            return Outcome("unchanged", ref.version)
        if ref.status != "READY":
            # Artifacts may still be copying: not a failure, just not yet.
            return Outcome("pending", ref.version, f"v{ref.version} is {ref.status}")
        failure = self._failure
        if failure is not None and failure.version == ref.version:
            if time.monotonic() < failure.retry_at:
                return Outcome("skipped", ref.version, self.last_error)
        elif failure is not None:
            self._failure = None  # the target moved: a new change earns a fresh attempt
        return self._swap(ref, current)

    def _swap(self, ref: VersionRef, current: LoadedModel | None) -> Outcome:
        started = time.perf_counter()
        try:
            loaded = self._loader(ref, self.target)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            attempts = (self._failure.attempts + 1) if self._failure else 1
            delay = min(self._failure_backoff * 2 ** (attempts - 1), self._max_failure_backoff)
            self._failure = _Failure(ref.version, time.monotonic() + delay, attempts)
            self.last_error = f"{ref.name} v{ref.version} failed to load: {reason}"
            log.warning("%s; keeping %s; retry in %.0fs", self.last_error, _name(current), delay)
            if self._observer is not None:
                self._observer.swap_failed(ref.name, ref.version, reason)
            return Outcome("failed", ref.version, self.last_error)
        self._current = loaded  # the swap: one reference assignment
        seconds = time.perf_counter() - started
        self._failure = None
        self.last_error = None
        log.info(
            "serving %s v%s (was %s; %s path, loaded in %.2fs)",
            ref.name,
            ref.version,
            _name(current),
            getattr(loaded.predictor, "path", loaded.flavor),
            seconds,
        )
        if self._observer is not None:
            self._observer.swapped(loaded, current, seconds)
        return Outcome("loaded", ref.version)


def _name(model: LoadedModel | None) -> str:
    return f"v{model.version}" if model else "nothing"

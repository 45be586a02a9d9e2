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
from serving.runtime.history import SwapHistory
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

    def relabelled(self, model: LoadedModel, previous: LoadedModel) -> None: ...

    def stale(self, name: str, stale: bool) -> None: ...


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
        # What the target resolved to on the last answer; differs from the served version
        # while a new version is pending or refused (the snapshot is then "stale").
        self.target_version: str | None = None
        self.stale = False
        # Recorded here, not through the observer: every holder has one, however composed.
        self.history = SwapHistory()

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
            "stale": self.stale,
            "target_version": self.target_version,
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
        self.target_version = ref.version if ref else None
        current = self._current
        if ref is not None and current is not None and _same(current, ref):
            # The steady state: one registry call per poll, labels from its answer.
            self._relabel(current, ref)
            self._set_stale(False)
            return Outcome("unchanged", ref.version)
        outcome = self._follow(ref, current)
        if current is not None and outcome.action != "loaded":
            # Still serving a version the target left: its labels must say what the registry
            # says of it now (e.g. Archived), not what it was when it was loaded.
            self._relabel_served(current)
        self._set_stale(current is not None and outcome.action != "loaded")
        return outcome

    def _follow(self, ref: VersionRef | None, current: LoadedModel | None) -> Outcome:
        if ref is None:
            self.last_error = f"{self.target.describe()} points at no version"
            return Outcome("empty", detail=self.last_error)
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

    def _relabel_served(self, current: LoadedModel) -> None:
        try:
            ref = self._probe.resolve(ModelTarget(current.name, version=current.version))
        except RegistryUnavailable as exc:
            log.info("labels of v%s not refreshed: %s", current.version, exc.message)
            return
        # A deleted version has no stage and no alias left.
        self._relabel(current, ref or VersionRef(current.name, current.version, None, None))

    def _relabel(self, current: LoadedModel, ref: VersionRef) -> None:
        """Same artifacts under the registry's current labels: no reload."""
        stage, alias = ref.stage, ref.alias_for(self.target)
        if (current.stage, current.alias) == (stage, alias) or self._current is not current:
            return
        relabelled = dataclasses.replace(current, stage=stage, alias=alias)
        self._current = relabelled
        log.info("v%s is now labelled stage=%s alias=%s", current.version, stage, alias)
        if self._observer is not None:
            self._observer.relabelled(relabelled, current)

    def _set_stale(self, stale: bool) -> None:
        self.stale = stale
        if self._observer is not None:
            self._observer.stale(self.target.name, stale)

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
            self.history.swap_failed(ref.name, ref.version, reason)
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
        self.history.swapped(loaded, current, seconds)
        if self._observer is not None:
            self._observer.swapped(loaded, current, seconds)
        return Outcome("loaded", ref.version)


def _same(model: LoadedModel, ref: VersionRef) -> bool:
    return model.name == ref.name and model.version == ref.version


def _name(model: LoadedModel | None) -> str:
    return f"v{model.version}" if model else "nothing"

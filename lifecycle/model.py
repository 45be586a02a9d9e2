"""The served model: resolve the registry target, load, smoke-test, swap; follow the registry.

`ModelHolder` keeps one immutable `LoadedModel` snapshot. A new version is loaded and tested
completely before a single reference assignment makes it current, so a request that already
holds the old snapshot finishes on it and no request sees a half-loaded model (MLServer's
`_reload_model` pattern). `Reconciler` runs the holder's reconcile in a background thread every
poll interval, or at once when triggered by a webhook or an admin reload.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
from mlflow.models import Model

from lifecycle import predictors, scoring
from lifecycle.errors import ConfigError, LifecycleError
from lifecycle.schema import FeatureSchema
from lifecycle.settings import Settings

log = logging.getLogger(__name__)


class ModelUnavailable(LifecycleError):
    status_code = 503


class RegistryUnavailable(LifecycleError):
    status_code = 503


@dataclass(frozen=True)
class ModelTarget:
    """What to serve: a stage, an alias or a pinned version of one registered model."""

    name: str
    stage: str | None = None
    alias: str | None = None
    version: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelTarget:
        if not settings.model_uri:
            return cls(settings.registered_model_name(), stage=settings.model_stage)
        return cls.parse(settings.model_uri)

    @classmethod
    def parse(cls, uri: str) -> ModelTarget:
        match = re.fullmatch(r"models:/([^/@]+)(?:@([^/@]+)|/([^/@]+))", uri.strip())
        if not match:
            raise ConfigError(
                f"model_uri '{uri}': expected models:/NAME@ALIAS, models:/NAME/STAGE "
                "or models:/NAME/VERSION"
            )
        name, alias, rest = match.groups()
        if alias:
            return cls(name, alias=alias)
        if rest.isdigit():
            return cls(name, version=rest)
        return cls(name, stage=rest)

    def describe(self) -> str:
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version or self.stage}"


@dataclass(frozen=True)
class VersionRef:
    """What the registry says the target points at now (one cheap call per poll)."""

    name: str
    version: str
    run_id: str | None
    stage: str | None
    aliases: tuple[str, ...] = ()
    status: str = "READY"


@dataclass(frozen=True)
class LoadedModel:
    """An immutable snapshot: everything a request needs, swapped as one reference."""

    name: str
    version: str
    stage: str | None
    alias: str | None
    run_id: str | None
    schema: FeatureSchema
    predictor: predictors.Predictor
    loaded_at: datetime
    flavor: str
    labels: Mapping[Any, str] = field(default_factory=dict)

    def label_of(self, value: Any) -> str:
        label = self.labels.get(value)
        return label if label is not None else str(value)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "stage": self.stage,
            "alias": self.alias,
            "run_id": self.run_id,
        }


class SwapObserver(Protocol):
    def swapped(self, model: LoadedModel, previous: LoadedModel | None, seconds: float) -> None: ...

    def swap_failed(self, name: str, version: str, reason: str) -> None: ...


class RegistryProbe:
    """Resolves a target to a version with a single REST call, no retries, a short timeout.

    MLflow's client retries for minutes by default; a poller must instead fail fast, keep
    serving and try again on its next tick.
    """

    def __init__(self, tracking_uri: str, timeout: float) -> None:
        self._uri = tracking_uri
        self._timeout = timeout

    def resolve(self, target: ModelTarget) -> VersionRef | None:
        if target.alias:
            query = urlencode({"name": target.name, "alias": target.alias})
            data = self._call("GET", f"registered-models/alias?{query}")
            mv = (data or {}).get("model_version")
            return _ref(mv) if mv else None
        if target.version:
            query = urlencode({"name": target.name, "version": target.version})
            data = self._call("GET", f"model-versions/get?{query}")
            mv = (data or {}).get("model_version")
            return _ref(mv) if mv else None
        data = self._call(
            "POST",
            "registered-models/get-latest-versions",
            {"name": target.name, "stages": [target.stage]},
        )
        found = [_ref(mv) for mv in (data or {}).get("model_versions", [])]
        return max(found, key=lambda r: int(r.version)) if found else None

    def _call(self, method: str, endpoint: str, body: Any = None) -> dict[str, Any] | None:
        from mlflow.tracking._tracking_service.utils import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        try:
            response = http_request(
                get_default_host_creds(self._uri),
                f"/api/2.0/mlflow/{endpoint}",
                method,
                max_retries=0,
                timeout=self._timeout,
                raise_on_status=False,
                **({"json": body} if body is not None else {}),
            )
        except Exception as exc:  # any transport failure means "unreachable" to a poller
            raise RegistryUnavailable(f"registry unreachable: {type(exc).__name__}") from exc
        if response.status_code == 404 or (
            response.status_code == 400 and "RESOURCE_DOES_NOT_EXIST" in response.text
        ):
            return None
        if response.status_code != 200:
            raise RegistryUnavailable(f"registry answered HTTP {response.status_code}")
        result: dict[str, Any] = response.json()
        return result


def _ref(mv: Mapping[str, Any]) -> VersionRef:
    return VersionRef(
        name=str(mv["name"]),
        version=str(mv["version"]),
        run_id=mv.get("run_id") or None,
        stage=mv.get("current_stage") or None,
        aliases=tuple(mv.get("aliases") or ()),
        status=str(mv.get("status") or "READY"),
    )


def load_version(ref: VersionRef, target: ModelTarget) -> LoadedModel:
    """Download, load and smoke-test one version; raise if it cannot serve."""
    uri = f"models:/{ref.name}/{ref.version}"
    with tempfile.TemporaryDirectory(prefix="lifecycle-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        meta = Model.load(local)
        schema = _schema(meta)
        example = _example(meta, local, schema)
        if "sklearn" in meta.flavors:
            estimator = mlflow.sklearn.load_model(local)
            predictor: predictors.Predictor = _choose(
                predictors.sklearn_candidates(estimator, schema), example
            )
            flavor = "sklearn"
        else:
            predictor = predictors.PyfuncPredictor("pyfunc", mlflow.pyfunc.load_model(uri), schema)
            flavor = "pyfunc"
    out, _ = predictor.predict(example)
    if len(out) != len(example):
        raise ValueError(f"smoke test: {len(example)} rows in, {len(out)} predictions out")
    return LoadedModel(
        name=ref.name,
        version=ref.version,
        stage=ref.stage,
        alias=target.alias,
        run_id=ref.run_id,
        schema=schema,
        predictor=predictor,
        loaded_at=datetime.now(UTC),
        flavor=flavor,
        labels=scoring.label_lookup(schema),
    )


def _schema(meta: Model) -> FeatureSchema:
    if meta.metadata and "features" in meta.metadata:
        return FeatureSchema.from_metadata(meta.metadata)
    if meta.signature is None:
        raise ValueError("model has neither feature metadata nor a signature")
    return FeatureSchema.from_signature(meta.signature)


def _example(meta: Model, local: str, schema: FeatureSchema) -> np.ndarray:
    try:
        frame = meta.load_input_example(local)
    except Exception as exc:
        log.warning("input example unreadable (%s); smoke-testing on a synthetic row", exc)
        frame = None
    if frame is None or not hasattr(frame, "to_dict"):
        synthetic = [0.0 if f.kind == "numeric" else None for f in schema.features]
        return scoring.matrix([synthetic], schema)
    records = frame.to_dict(orient="records")
    return scoring.matrix([scoring.row(r, schema, i) for i, r in enumerate(records)], schema)


def _choose(candidates: list[predictors.SklearnPredictor], example: np.ndarray) -> Any:
    """The fastest path that answers exactly like the model as fitted (the last candidate)."""
    reference = candidates[-1].predict(example)
    for candidate in candidates[:-1]:
        try:
            if predictors.same_output(candidate.predict(example), reference):
                return candidate
            log.info("scoring path %s differs from the fitted model; not used", candidate.path)
        except Exception as exc:
            log.info("scoring path %s unusable: %s", candidate.path, exc)
    return candidates[-1]


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
            RegistryProbe(uri, settings.tracking_timeout),
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


class Reconciler:
    """Runs `holder.reconcile()` every interval in a daemon thread; `trigger()` runs it now."""

    def __init__(self, holder: ModelHolder, interval: float, max_backoff: float = 30.0) -> None:
        self.holder = holder
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._cycles = 0
        self._running = False
        self._last: Outcome | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="lifecycle-reconciler", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def trigger(self) -> None:
        self._wake.set()

    def reconcile_now(self, timeout: float = 60.0) -> Outcome | None:
        """Trigger and wait for a reconcile that started after this call."""
        with self._cond:
            target = self._cycles + (2 if self._running else 1)
            self.trigger()
            self._cond.wait_for(lambda: self._cycles >= target, timeout)
            return self._last if self._cycles >= target else None

    def _run(self) -> None:
        delay = self.interval
        while not self._stop.is_set():
            with self._cond:
                self._running = True
            try:
                outcome = self.holder.reconcile()
            except Exception as exc:  # a poller that dies silently would freeze the model
                log.exception("reconcile failed")
                outcome = Outcome("degraded", detail=f"{type(exc).__name__}: {exc}")
            if outcome.action == "degraded":
                delay = min(delay * 2, self.max_backoff)
                log.warning("%s; next try in %.1fs", outcome.detail, delay)
            else:
                delay = self.interval
            with self._cond:
                self._running = False
                self._cycles += 1
                self._last = outcome
                self._cond.notify_all()
            self._wake.wait(delay)
            self._wake.clear()

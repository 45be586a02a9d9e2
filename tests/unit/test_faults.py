"""The fault-handling pieces on their own: relabelling a stale snapshot, the poller's
back-off cap, registry errors with their cause, a store whose spool cannot be created, and
an API start that gives up waiting for a model."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException

from lifecycle.core.store import PredictionStore
from serving.api.startup import ProcessState, load_before_serving
from serving.runtime import LoadedModel, ModelHolder, ModelTarget, Reconciler, VersionRef
from serving.runtime.probe import MlflowRegistryProbe, RegistryUnavailable
from tests.support.store_records import CountingObserver, make_record

NAME = "iris-classifier"


@dataclass
class Registry:
    """A registry probe over a dict of versions; `target` says what the stage points at."""

    versions: dict[str, VersionRef]
    target: str | None
    calls: list[ModelTarget] = field(default_factory=list)

    def resolve(self, target: ModelTarget) -> VersionRef | None:
        self.calls.append(target)
        wanted = target.version or self.target
        return self.versions.get(wanted) if wanted else None


@dataclass
class Observer:
    events: list[tuple[str, Any]] = field(default_factory=list)

    def swapped(self, model: LoadedModel, previous: LoadedModel | None, seconds: float) -> None:
        self.events.append(("swapped", model.version))

    def swap_failed(self, name: str, version: str, reason: str) -> None:
        self.events.append(("failed", version))

    def relabelled(self, model: LoadedModel, previous: LoadedModel) -> None:
        self.events.append(("relabelled", (model.stage, model.alias)))

    def stale(self, name: str, stale: bool) -> None:
        self.events.append(("stale", stale))


def _load(ref: VersionRef, target: ModelTarget) -> LoadedModel:
    if ref.version == "3":
        raise ValueError("not a pickle")
    return LoadedModel(
        name=ref.name,
        version=ref.version,
        stage=ref.stage,
        alias=ref.alias_for(target),
        run_id=ref.run_id,
        schema=None,  # type: ignore[arg-type]
        predictor=None,  # type: ignore[arg-type]
        loaded_at=datetime.now(UTC),
        flavor="sklearn",
    )


def _ref(version: str, stage: str, *aliases: str) -> VersionRef:
    return VersionRef(NAME, version, f"run-{version}", stage, tuple(aliases))


def test_refused_target_relabels_the_served_version_and_marks_it_stale() -> None:
    registry = Registry({"2": _ref("2", "Production", "production")}, target="2")
    observer = Observer()
    holder = ModelHolder(ModelTarget(NAME, stage="Production"), registry, _load, observer)
    assert holder.reconcile().action == "loaded"
    assert holder.get().alias == "production"
    registry.calls.clear()
    assert holder.reconcile().action == "unchanged"
    assert len(registry.calls) == 1  # the steady state: one registry call per poll

    registry.versions = {"2": _ref("2", "Archived", "production"), "3": _ref("3", "Production")}
    registry.target = "3"
    assert holder.reconcile().action == "failed"
    served = holder.get()
    assert (served.version, served.stage, served.alias) == ("2", "Archived", "production")
    status = holder.status()
    assert status["stale"] is True and status["target_version"] == "3"
    assert ("relabelled", ("Archived", "production")) in observer.events
    assert observer.events[-1] == ("stale", True)

    registry.target = "2"  # rolled back: the target is the served version again
    registry.versions["2"] = _ref("2", "Production")
    assert holder.reconcile().action == "unchanged"
    assert holder.get().stage == "Production" and holder.get().alias is None
    assert holder.status()["stale"] is False and observer.events[-1] == ("stale", False)


def test_alias_label_prefers_the_followed_alias_and_never_a_moved_one() -> None:
    ref = _ref("4", "None", "zeta", "champion", "alpha")
    assert ref.alias_for(ModelTarget(NAME, alias="champion")) == "champion"
    assert ref.alias_for(ModelTarget(NAME, alias="gone")) == "alpha"
    assert _ref("4", "None").alias_for(ModelTarget(NAME, alias="champion")) is None


def test_registry_error_keeps_its_root_cause() -> None:
    class Refusing:
        def get_latest_versions(self, *args: Any, **kwargs: Any) -> Any:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except ConnectionRefusedError as exc:
                raise MlflowException("API request to http://x/" + "y" * 400 + " failed") from exc

    with pytest.raises(RegistryUnavailable) as caught:
        MlflowRegistryProbe(Refusing()).resolve(ModelTarget(NAME, stage="Production"))  # type: ignore[arg-type]
    assert "ConnectionRefusedError" in caught.value.message
    assert "Connection refused" in caught.value.message


def test_poller_backs_off_to_a_few_poll_intervals_not_30s() -> None:
    holder = ModelHolder(ModelTarget(NAME, stage="Production"), Registry({}, None), _load)
    assert Reconciler(holder, 2.0).max_backoff == 4.0
    assert Reconciler(holder, 0.5).max_backoff == 1.0
    assert Reconciler(holder, 2.0, max_backoff=1.0).max_backoff == 2.0  # never below a poll


def test_store_starts_with_an_uncreatable_spool_and_counts_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the spool folder should be")
    observer = CountingObserver()
    store = PredictionStore(
        "postgresql+psycopg2://postgres@127.0.0.1:9/none",
        blocker / "spool",
        flush_interval=0.01,
        observer=observer,
    )
    with caplog.at_level(logging.INFO, logger="lifecycle.core.store"):
        store.start()  # must not raise: the policy is "dropped and counted"
        try:
            for i in range(50):
                store.submit(make_record(i))
            store.flush(1.0)
            state = store.state()
        finally:
            store.stop(2.0)
    assert observer["dropped"] == 50 and observer["spooled"] == 0
    assert state.state == "degraded"
    assert state.reason and "unusable" in state.reason and "database unavailable" in state.reason
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert drops and all("unusable" in m and "queue was full" not in m for m in drops)


def test_startup_gives_up_waiting_for_a_model_and_says_why() -> None:
    holder = ModelHolder(ModelTarget(NAME, stage="Production"), Registry({}, None), _load)
    state = ProcessState()
    asyncio.run(load_before_serving(holder, 0.3, state))
    assert holder.current is None
    assert state.startup_error and "points at no version" in state.startup_error


def test_startup_loads_the_model_before_serving() -> None:
    registry = Registry({"2": _ref("2", "Production")}, target="2")
    holder = ModelHolder(ModelTarget(NAME, stage="Production"), registry, _load)
    state = ProcessState()
    asyncio.run(load_before_serving(holder, 5.0, state))
    assert holder.get().version == "2" and state.startup_error is None

"""An in-process scoring runtime on a real fitted iris pipeline, with the registry replaced by
a fixed version: for tests (and benchmarks) that exercise a transport in-process rather than
through `lifecycle worker` subprocesses."""

from __future__ import annotations

from datetime import UTC, datetime

from lifecycle.core.config import load_datasets, load_training
from lifecycle.core.settings import PROJECT_ROOT, Settings
from lifecycle.core.store import PredictionStore
from serving import predictors
from serving.metrics import Metrics
from serving.runtime import LoadedModel, ModelHolder, ModelTarget, Reconciler, VersionRef
from serving.wiring import Runtime
from training import data as data_mod
from training.pipeline import build_pipeline


class FixedVersion:
    """The registry's answer, fixed: version 7 of 'iris-classifier' in Production."""

    def resolve(self, target: ModelTarget) -> VersionRef:
        return VersionRef(target.name, "7", "run-7", "Production")


def load_iris(ref: VersionRef, target: ModelTarget) -> LoadedModel:
    conf = PROJECT_ROOT / "conf"
    data = data_mod.load("iris", data_mod.resolve_config("iris", load_datasets(conf)))
    estimator = "logistic_regression"
    params = load_training(conf).estimators[estimator].params
    pipeline = build_pipeline(data.schema, estimator, params, 42).fit(data.X, data.y)
    return LoadedModel(
        name=ref.name,
        version=ref.version,
        stage=ref.stage,
        alias=None,
        run_id=ref.run_id,
        schema=data.schema,
        predictor=predictors.sklearn_candidates(pipeline, data.schema)[-1],
        loaded_at=datetime.now(UTC),
        flavor="sklearn",
        labels=dict(zip(data.schema.classes, data.schema.class_labels, strict=True)),
    )


def fixed_runtime(settings: Settings) -> Runtime:
    """A Runtime scoring iris version 7, storing synchronously through
    `settings`' database as a worker does (no background writer, no reconciler)."""
    target = ModelTarget("iris-classifier", stage="Production")
    holder = ModelHolder(target, FixedVersion(), load_iris)
    holder.reconcile()
    store = PredictionStore.from_settings(settings)
    return Runtime(settings, holder, Reconciler(holder, 3600), store, Metrics())

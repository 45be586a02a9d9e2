"""Loading one version: download, choose the fastest faithful predictor, smoke-test.

A version that cannot load or answer its own input example raises here, before anything is
swapped, so the holder keeps serving what it had.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import Model

from lifecycle.core.schema import FeatureSchema
from serving import predictors, validation
from serving.runtime.target import ModelTarget, VersionRef

log = logging.getLogger(__name__)


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

    @cached_property
    def header_items(self) -> tuple[tuple[str, str], ...]:
        """The X-Model-* headers every answer of this snapshot carries."""
        items = [("X-Model-Name", self.name), ("X-Model-Version", self.version)]
        if self.stage:
            items.append(("X-Model-Stage", self.stage))
        if self.alias:
            items.append(("X-Model-Alias", self.alias))
        if self.run_id:
            items.append(("X-Model-Run-Id", self.run_id))
        return tuple(items)

    @cached_property
    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """`header_items` as Starlette encodes a header dict: lower-case, latin-1. Computed
        once per snapshot: the one-row path answers thousands of requests a second."""
        return tuple(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.header_items
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "stage": self.stage,
            "alias": self.alias,
            "run_id": self.run_id,
        }


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
        alias=ref.alias_for(target),
        run_id=ref.run_id,
        schema=schema,
        predictor=predictor,
        loaded_at=datetime.now(UTC),
        flavor=flavor,
        labels=dict(zip(schema.classes, schema.class_labels, strict=True)),
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
    if not isinstance(frame, pd.DataFrame):
        synthetic = [0.0 if f.kind == "numeric" else None for f in schema.features]
        return validation.rows([synthetic], schema, 1, "example")
    return validation.frame_rows(frame, schema).X


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

"""The feature schema: defined once from the training data, carried by the model.

Training derives it from the dataset and stores it in the model's signature and metadata;
every scoring path reads it back from the model it serves. No module keeps its own list of
feature names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

from lifecycle.core.errors import DataError

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind


@dataclass(frozen=True)
class FeatureSchema:
    features: tuple[Feature, ...]
    target: str
    classes: tuple[Any, ...]
    class_labels: tuple[str, ...]
    # Whether the model imputes a missing numeric value itself. Written at training time from
    # the fitted pipeline; a model logged without it (older Lifecycle, or elsewhere) is taken
    # not to, so a null never reaches an estimator that would fail on it or score it silently.
    accepts_missing: bool = False

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        target: str,
        categorical: Sequence[str] = (),
        class_labels: Mapping[Any, str] | None = None,
    ) -> FeatureSchema:
        features = []
        for name in frame.columns:
            if name == target:
                continue
            numeric = pd.api.types.is_numeric_dtype(frame[name]) and not pd.api.types.is_bool_dtype(
                frame[name]
            )
            kind: Kind = "categorical" if name in categorical or not numeric else "numeric"
            features.append(Feature(str(name), kind))
        classes = tuple(_plain(v) for v in sorted(frame[target].dropna().unique()))
        labels = tuple(str(class_labels[c]) if class_labels else str(c) for c in classes)
        return cls(tuple(features), target, classes, labels)

    def coerce(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Cast features to the dtypes the signature declares (float64 and str)."""
        out = pd.DataFrame(index=frame.index)
        for f in self.features:
            col = frame[f.name]
            if f.kind == "numeric":
                out[f.name] = pd.to_numeric(col, errors="raise").astype("float64")
            else:
                out[f.name] = col.map(lambda v: None if _missing(v) else str(v)).astype(object)
        return out

    def input_schema(self) -> Schema:
        return Schema(
            [
                ColSpec(DataType.double if f.kind == "numeric" else DataType.string, f.name)
                for f in self.features
            ]
        )

    def signature(self) -> ModelSignature:
        target_type = (
            DataType.long if all(isinstance(c, int) for c in self.classes) else (DataType.string)
        )
        return ModelSignature(
            inputs=self.input_schema(), outputs=Schema([ColSpec(target_type, self.target)])
        )

    def to_metadata(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "classes": list(self.classes),
            "class_labels": list(self.class_labels),
            "features": [{"name": f.name, "kind": f.kind} for f in self.features],
            "accepts_missing": self.accepts_missing,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> FeatureSchema:
        try:
            return cls(
                tuple(Feature(f["name"], f["kind"]) for f in metadata["features"]),
                str(metadata["target"]),
                tuple(metadata["classes"]),
                tuple(metadata["class_labels"]),
                bool(metadata.get("accepts_missing", False)),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"model metadata carries no feature schema ({exc})") from exc

    @classmethod
    def from_signature(cls, signature: ModelSignature) -> FeatureSchema:
        """A schema for models logged elsewhere: features from the signature, no class names."""
        inputs = signature.inputs
        if inputs is None or not inputs.has_input_names():
            raise DataError("model signature has no named inputs")
        features = []
        for spec in inputs.inputs:
            numeric = isinstance(spec, ColSpec) and spec.type in (
                DataType.double,
                DataType.float,
                DataType.long,
                DataType.integer,
                DataType.boolean,
            )
            features.append(Feature(str(spec.name), "numeric" if numeric else "categorical"))
        outputs = signature.outputs
        target = "prediction"
        if outputs is not None and outputs.has_input_names():
            target = str(outputs.input_names()[0])
        return cls(tuple(features), target, (), ())


def _plain(value: Any) -> Any:
    """numpy scalars → Python scalars, so classes serialise to JSON and YAML."""
    return value.item() if isinstance(value, np.generic) else value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))

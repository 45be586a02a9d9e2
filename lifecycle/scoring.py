"""Request bodies → a checked feature matrix → predictions, driven by the model's schema.

Shared by every scoring path (REST, Celery, batch): no web framework here. Every problem
with an input raises `InvalidInput` whose message names the row, the feature and what was
wrong, so callers can answer 4xx without a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from lifecycle.errors import LifecycleError
from lifecycle.schema import FeatureSchema

if TYPE_CHECKING:
    from lifecycle.model import LoadedModel


class InvalidInput(LifecycleError):
    status_code = 422


class MalformedBody(LifecycleError):
    status_code = 400


class PayloadTooLarge(LifecycleError):
    status_code = 413


class UnsupportedMediaType(LifecycleError):
    status_code = 415


INVOCATION_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not a valid number: send finite numbers only")


def loads(body: bytes) -> Any:
    """Strict JSON: NaN and Infinity (which Python's json accepts) are refused."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"request body is not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise MalformedBody(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise MalformedBody("malformed JSON: nested too deeply") from exc


@dataclass(frozen=True)
class Rows:
    """A checked matrix in schema order; `batch` says whether the caller sent a list."""

    X: np.ndarray
    batch: bool

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def feature_dicts(self, names: Sequence[str]) -> list[dict[str, Any]]:
        # One C-level conversion for the whole matrix instead of a numpy scalar per cell.
        return [dict(zip(names, values, strict=True)) for values in self.X.tolist()]


def parse_predict(body: Any, schema: FeatureSchema, max_rows: int) -> Rows:
    """`{"features": [...]}`, `{"features": {name: value}}` or `{"instances": [row, ...]}`."""
    if not isinstance(body, dict):
        raise InvalidInput('body must be a JSON object with "features" or "instances"')
    keys = [k for k in ("features", "instances") if k in body]
    extra = sorted(set(body) - {"features", "instances"})
    if extra:
        raise InvalidInput(
            f'unknown field(s) {", ".join(extra)}: expected "features" or "instances"'
        )
    if len(keys) != 1:
        raise InvalidInput('send exactly one of "features" (one row) or "instances" (a batch)')
    if keys[0] == "features":
        return Rows(matrix([row(body["features"], schema, None)], schema), batch=False)
    return Rows(rows(body["instances"], schema, max_rows, "instances"), batch=True)


def parse_invocations(body: Any, schema: FeatureSchema, max_rows: int) -> Rows:
    """MLflow's scoring protocol, as `mlflow models serve` accepts it for tabular models."""
    if not isinstance(body, dict):
        raise InvalidInput(f"body must be a JSON object with one of {', '.join(INVOCATION_KEYS)}")
    keys = [k for k in INVOCATION_KEYS if k in body]
    extra = sorted(set(body) - {*INVOCATION_KEYS, "params"})
    if extra:
        raise InvalidInput(
            f"unknown field(s) {', '.join(extra)}: expected one of {', '.join(INVOCATION_KEYS)}"
        )
    if len(keys) != 1:
        raise InvalidInput(f"send exactly one of {', '.join(INVOCATION_KEYS)}")
    key, value = keys[0], body[keys[0]]
    if key == "dataframe_split":
        return Rows(_split(value, schema, max_rows), batch=True)
    if key == "inputs" and isinstance(value, dict):
        return Rows(_columns(value, schema, max_rows), batch=True)
    return Rows(rows(value, schema, max_rows, key), batch=True)


def rows(value: Any, schema: FeatureSchema, max_rows: int, field: str) -> np.ndarray:
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a list of rows")
    if not value:
        raise InvalidInput(f"{field} is empty: send at least one row")
    if len(value) > max_rows:
        raise InvalidInput(f"{field} has {len(value)} rows; the maximum is {max_rows}")
    return matrix([row(r, schema, i) for i, r in enumerate(value)], schema)


def _split(value: Any, schema: FeatureSchema, max_rows: int) -> np.ndarray:
    if not isinstance(value, dict) or "data" not in value:
        raise InvalidInput('dataframe_split must be an object with "data" (and "columns")')
    unknown = sorted(set(value) - {"columns", "data", "index"})
    if unknown:
        raise InvalidInput(f"dataframe_split: unknown field(s) {', '.join(unknown)}")
    columns = value.get("columns")
    data = value["data"]
    if columns is None:
        return rows(data, schema, max_rows, "dataframe_split.data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput("dataframe_split.columns must be a list of feature names")
    if len(set(columns)) != len(columns):
        raise InvalidInput("dataframe_split.columns has duplicate names")
    _check_names(set(columns), schema, "dataframe_split.columns")
    if columns == schema.names:
        return rows(data, schema, max_rows, "dataframe_split.data")
    if not isinstance(data, list):
        raise InvalidInput("dataframe_split.data must be a list of rows")
    records = []
    for i, r in enumerate(data):
        if not isinstance(r, list) or len(r) != len(columns):
            raise InvalidInput(
                f"dataframe_split.data row {i}: expected a list of {len(columns)} values"
            )
        records.append(dict(zip(columns, r, strict=True)))
    return rows(records, schema, max_rows, "dataframe_split.data")


def _columns(value: dict[str, Any], schema: FeatureSchema, max_rows: int) -> np.ndarray:
    _check_names(set(value), schema, "inputs")
    lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
    if -1 in lengths or len(lengths) != 1:
        raise InvalidInput("inputs: each feature must map to a list, all of the same length")
    n = lengths.pop()
    records = [{k: v[i] for k, v in value.items()} for i in range(n)]
    return rows(records, schema, max_rows, "inputs")


def row(value: Any, schema: FeatureSchema, index: int | None) -> list[Any]:
    where = "features" if index is None else f"row {index}"
    names = schema.names
    if isinstance(value, list):
        if len(value) != len(names):
            raise InvalidInput(
                f"{where}: expected {len(names)} features ({', '.join(names)}), got {len(value)}"
            )
        values = value
    elif isinstance(value, dict):
        _check_names(set(value), schema, where)
        values = [value[n] for n in names]
    else:
        raise InvalidInput(f"{where}: expected a list of {len(names)} values or an object by name")
    return [_cell(v, f, where) for v, f in zip(values, schema.features, strict=True)]


def _check_names(given: set[str], schema: FeatureSchema, where: str) -> None:
    expected = set(schema.names)
    unknown = sorted(given - expected)
    if unknown:
        raise InvalidInput(
            f"{where}: unknown feature(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(map(repr, schema.names))}"
        )
    missing = [n for n in schema.names if n not in given]
    if missing:
        raise InvalidInput(f"{where}: missing feature(s) {', '.join(map(repr, missing))}")


def _cell(value: Any, feature: Any, where: str) -> Any:
    if feature.kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | float):
            got = "null" if value is None else type(value).__name__
            raise InvalidInput(f"{where}: feature '{feature.name}' must be a number, got {got}")
        number = float(value) if isinstance(value, float) else _int_as_float(value, feature, where)
        if not math.isfinite(number):
            raise InvalidInput(f"{where}: feature '{feature.name}' must be finite, got {number}")
        return number
    if value is None:
        return None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise InvalidInput(
        f"{where}: feature '{feature.name}' must be a string, got {type(value).__name__}"
    )


def _int_as_float(value: int, feature: Any, where: str) -> float:
    try:
        return float(value)
    except OverflowError as exc:
        raise InvalidInput(f"{where}: feature '{feature.name}' is out of range") from exc


def matrix(values: list[list[Any]], schema: FeatureSchema) -> np.ndarray:
    dtype = np.float64 if not schema.categorical else object
    return np.array(values, dtype=dtype).reshape(len(values), len(schema.names))


@dataclass(frozen=True)
class Scored:
    predictions: list[Any]
    labels: list[str]
    probabilities: list[dict[str, float]] | None


def score(model: LoadedModel, data: Rows) -> Scored:
    predicted, probs = model.predictor.predict(data.X)
    predictions = [_plain(p) for p in predicted.tolist()]
    labels = [model.label_of(p) for p in predictions]
    probabilities = None
    if probs is not None:
        names = [model.label_of(_plain(c)) for c in model.predictor.classes]
        probabilities = [dict(zip(names, r, strict=True)) for r in probs.tolist()]
    return Scored(predictions, labels, probabilities)


def normalise_label(value: Any, schema: FeatureSchema) -> str:
    """A feedback label given as class label ('setosa') or raw class value (0) → class label."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput("label must be a class label or a class value")
    if isinstance(value, str) and value in schema.class_labels:
        return value
    for cls, label in zip(schema.classes, schema.class_labels, strict=True):
        if value == cls or str(value) == str(cls):
            return label
    if not schema.classes:
        return str(value)
    known = ", ".join(
        f"{lab} ({cls})" for cls, lab in zip(schema.classes, schema.class_labels, strict=True)
    )
    raise InvalidInput(f"label {value!r} is not a class of this model; known: {known}")


def label_lookup(schema: FeatureSchema) -> Mapping[Any, str]:
    return dict(zip(schema.classes, schema.class_labels, strict=True))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def row_ids(request_id: str, n: int) -> list[str]:
    """One row keeps the request id; row i of a batch is `<request id>-<i>` (for /feedback)."""
    return [request_id] if n == 1 else [f"{request_id}-{i}" for i in range(n)]


def predict_response(
    model: LoadedModel,
    data: Rows,
    scored: Scored,
    request_id: str,
    ids: Sequence[str],
    at: datetime,
) -> dict[str, Any]:
    """The /predict answer, the same from REST and from an async task."""
    items = [
        {
            "prediction": scored.predictions[i],
            "label": scored.labels[i],
            "probabilities": scored.probabilities[i] if scored.probabilities else None,
        }
        for i in range(len(data))
    ]
    content: dict[str, Any] = {"request_id": request_id, "timestamp": at.isoformat()}
    if data.batch:
        content["predictions"] = [{"request_id": ids[i], **item} for i, item in enumerate(items)]
    else:
        content.update(items[0])
    content["model"] = model.describe()
    return content


def records(
    model: LoadedModel,
    data: Rows,
    scored: Scored,
    request_ids: Sequence[str],
    source: str,
    created_at: datetime,
    latency_ms: float,
) -> list[Any]:
    """One prediction-store record per row (the same for REST, async and batch scoring)."""
    from lifecycle.store import PredictionRecord

    features = data.feature_dicts(model.schema.names)
    return [
        PredictionRecord(
            request_id=request_ids[i],
            created_at=created_at,
            source=source,
            model_name=model.name,
            model_version=model.version,
            run_id=model.run_id,
            features=features[i],
            prediction=scored.predictions[i],
            label=scored.labels[i],
            probabilities=scored.probabilities[i] if scored.probabilities else None,
            latency_ms=latency_ms,
        )
        for i in range(len(data))
    ]

"""The one validator: request bodies and file chunks → a checked feature matrix, driven by
the model's schema.

Every scoring path (REST, Celery, plain AMQP, batch files) checks its rows here, so a bad row
gets the same `InvalidInput` and the same message whichever way it came: the message names the
row, the feature and what was wrong, and callers answer 4xx without a traceback. No web
framework here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lifecycle.core.errors import LifecycleError
from lifecycle.core.schema import Feature, FeatureSchema

if TYPE_CHECKING:
    import pandas as pd


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


def _cell(value: Any, feature: Feature, where: str) -> Any:
    """One value checked and converted; the only place that words a bad value."""
    if feature.kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(
                f"{where}: feature '{feature.name}' must be a number, got {_kind(value)}"
            )
        number = float(value) if isinstance(value, float) else _int_as_float(value, feature, where)
        if not math.isfinite(number):
            got = "a number, got null" if math.isnan(number) else f"finite, got {number}"
            raise InvalidInput(f"{where}: feature '{feature.name}' must be {got}")
        return number
    if _missing(value):
        return None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise InvalidInput(f"{where}: feature '{feature.name}' must be a string, got {_kind(value)}")


def _kind(value: Any) -> str:
    """How a refused value is named in a message: its type, or a short repr of a string."""
    if _missing(value):
        return "null"
    if isinstance(value, str):
        # repr escapes control characters and lone surrogates: safe to echo and to log.
        return repr(value[:40] + ("…" if len(value) > 40 else ""))
    if isinstance(value, np.generic):
        value = value.item()
    return type(value).__name__


def _missing(value: Any) -> bool:
    # A file's empty cell arrives as NaN (or pandas' NA), a JSON body's as null: both missing.
    return value is None or (isinstance(value, float) and math.isnan(value)) or _is_na(value)


def _is_na(value: Any) -> bool:
    return type(value).__name__ in ("NAType", "NaTType")


def _int_as_float(value: int, feature: Feature, where: str) -> float:
    try:
        return float(value)
    except OverflowError as exc:
        raise InvalidInput(f"{where}: feature '{feature.name}' is out of range") from exc


def matrix(values: list[list[Any]], schema: FeatureSchema) -> np.ndarray:
    dtype = np.float64 if not schema.categorical else object
    return np.array(values, dtype=dtype).reshape(len(values), len(schema.names))


def frame_rows(frame: pd.DataFrame, schema: FeatureSchema, offset: int = 0) -> Rows:
    """A DataFrame's feature columns (a file chunk, an input example) checked like JSON rows.

    The check is vectorised per column; the first bad cell in row order is then worded by the
    same `_cell` that checks JSON bodies, so a bad row reads the same from a file and from a
    request. Columns that are not features are ignored (a file may carry ids or labels).
    """
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise InvalidInput(f"columns: missing feature(s) {', '.join(map(repr, missing))}")
    columns: list[np.ndarray] = []
    first_bad = len(frame)
    for feature in schema.features:
        values, bad = _column(frame[feature.name], feature)
        if bad.any():
            first_bad = min(first_bad, int(np.argmax(bad)))
        columns.append(values)
    if first_bad < len(frame):
        raw = frame.iloc[first_bad]
        for feature in schema.features:
            _cell(_python(raw[feature.name]), feature, f"row {offset + first_bad}")
        raise AssertionError("a bad cell was found but not worded")  # pragma: no cover
    dtype = np.float64 if not schema.categorical else object
    X = np.column_stack(columns).astype(dtype, copy=False) if columns else np.empty((0, 0))
    return Rows(X.reshape(len(frame), len(schema.names)), batch=True)


def _column(col: pd.Series, feature: Feature) -> tuple[np.ndarray, np.ndarray]:
    """The column's values and a mask of the cells `_cell` would refuse."""
    kind = col.dtype.kind
    if feature.kind == "numeric":
        if kind in "iuf":
            values = col.to_numpy(dtype=np.float64)
            return values, ~np.isfinite(values)
        cells = col.to_numpy(dtype=object)
        ok = np.fromiter((_is_number(v) for v in cells), dtype=bool, count=len(cells))
        values = np.where(ok, cells, np.nan).astype(np.float64)
        return values, ~ok | ~np.isfinite(values)
    cells = col.to_numpy(dtype=object)
    out = np.empty(len(cells), dtype=object)
    bad = np.zeros(len(cells), dtype=bool)
    for i, v in enumerate(cells):
        if _missing(v):
            out[i] = None
        elif isinstance(v, str | int | float | np.integer | np.floating) and not isinstance(
            v, bool | np.bool_
        ):
            out[i] = str(_python(v))
        else:
            bad[i] = True
    return out, bad


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


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

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
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

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


class SchemaMismatch(InvalidInput):
    """The input's columns do not line up with the model's: missing or unnamed features."""


MAX_ROWS_SETTING = "LIFECYCLE_MAX_BATCH_ROWS"
MAX_BODY_SETTING = "LIFECYCLE_MAX_BODY_BYTES"
_SURROGATE = re.compile("[\ud800-\udfff]")
# orjson reads an integer beyond 64 bits as a float, json as an int: such bodies go to json.
_LONG_DIGITS = re.compile(rb"\d{19}")


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not a valid number: send finite numbers only")


def loads(body: bytes | str, constants: bool = False) -> Any:
    """JSON text → Python, every endpoint's one reader.

    NaN and Infinity (which Python's json accepts) are refused unless `constants` (MLflow's
    protocol takes NaN as a missing value). An escaped lone UTF-16 surrogate ("\\ud800")
    decodes to a str no codec can encode, which would fail later (logging, the store, the
    answer) as a 500; it becomes U+FFFD here. The walk runs only when the text has such an
    escape at all, so ordinary bodies pay one substring search.
    """
    if isinstance(body, bytes) and not _LONG_DIGITS.search(body):
        try:
            # Several times faster than json on request bodies, and where the two differ
            # orjson refuses (NaN, lone surrogates, numbers beyond a double, a BOM, deep
            # nesting), so json then reads the body and decides, with its own messages.
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        value = json.loads(body, parse_constant=float if constants else _reject_constant)
        return _without_surrogates(value) if _may_escape_surrogate(body) else value
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"request body is not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise MalformedBody(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise MalformedBody("malformed JSON: nested too deeply") from exc


def _may_escape_surrogate(body: bytes | str) -> bool:
    if isinstance(body, bytes):
        return b"\\ud" in body or b"\\uD" in body
    return "\\ud" in body or "\\uD" in body


def replace_surrogates(text: str) -> str:
    """Lone UTF-16 surrogates (JSON escapes can carry them, UTF-8 cannot) become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return replace_surrogates(value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


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


def rows(value: Any, schema: FeatureSchema, max_rows: int, field: str) -> np.ndarray:
    """A list of rows, each a list in schema order or an object by name (`/predict`'s rows)."""
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a list of rows")
    check_count(len(value), max_rows, field)
    return matrix([row(r, schema, i) for i, r in enumerate(value)], schema)


def check_count(n: int, max_rows: int, field: str) -> None:
    if n == 0:
        raise InvalidInput(f"{field} is empty: send at least one row")
    if n > max_rows:
        raise PayloadTooLarge(
            f"{field} has {n} rows; the limit is {max_rows}: set {MAX_ROWS_SETTING} to accept more"
        )


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
        check_names(set(value), schema, where, extra_ok=False)
        values = [value[n] for n in names]
    else:
        raise InvalidInput(f"{where}: expected a list of {len(names)} values or an object by name")
    return cells(values, schema, where)


def cells(
    values: Sequence[Any], schema: FeatureSchema, where: str, convert: bool = False
) -> list[Any]:
    """One row's values, in schema order, checked; `convert` applies MLflow's conversions."""
    missing_ok = schema.accepts_missing
    return [
        _cell(v, f, where, missing_ok, convert)
        for v, f in zip(values, schema.features, strict=True)
    ]


def check_names(given: Collection[str], schema: FeatureSchema, where: str, extra_ok: bool) -> None:
    if not extra_ok:
        unknown = sorted(set(given) - set(schema.names))
        if unknown:
            raise InvalidInput(
                f"{where}: unknown feature(s) {', '.join(map(repr, unknown))}; "
                f"expected {', '.join(map(repr, schema.names))}"
            )
    missing = [n for n in schema.names if n not in given]
    if missing:
        raise SchemaMismatch(f"{where}: missing feature(s) {', '.join(map(repr, missing))}")


def _cell(value: Any, feature: Feature, where: str, missing_ok: bool, convert: bool) -> Any:
    """One value checked and converted; the only place that words a bad value."""
    if feature.kind == "numeric":
        if type(value) is float and value - value == 0.0:  # a finite JSON number: most cells
            return value
        number = _number(value, convert)
        if number is None:
            if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
                raise InvalidInput(f"{where}: feature '{feature.name}' is out of range")
            raise InvalidInput(
                f"{where}: feature '{feature.name}' must be a number, got {_kind(value)}"
            )
        if number - number == 0.0:
            return number
        if not math.isnan(number):
            raise InvalidInput(f"{where}: feature '{feature.name}' must be finite, got {number}")
        if not missing_ok:
            raise InvalidInput(
                f"{where}: feature '{feature.name}' must be a number, got {_kind(value)}: "
                "this model does not impute missing values"
            )
        return number
    if _missing(value):
        return None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise InvalidInput(f"{where}: feature '{feature.name}' must be a string, got {_kind(value)}")


def _number(value: Any, convert: bool) -> float | None:
    """The float a numeric cell stands for (NaN when missing), or None when it is none.

    `convert` is MLflow's schema enforcement, which casts a column with pandas'
    `astype(float64)`: booleans become 0/1 and numeric strings ("0.2", " 1e3 ", "nan") parse.
    """
    if _missing(value):
        return math.nan
    if isinstance(value, bool | np.bool_):
        return float(value) if convert else None
    if isinstance(value, int | float | np.integer | np.floating) or (
        convert and isinstance(value, str)
    ):
        try:
            return float(value)
        except (OverflowError, ValueError):
            return None
    return None


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


def matrix(values: list[list[Any]], schema: FeatureSchema) -> np.ndarray:
    dtype = np.float64 if not schema.categorical else object
    return np.array(values, dtype=dtype).reshape(len(values), len(schema.names))


def frame_rows(
    frame: pd.DataFrame, schema: FeatureSchema, offset: int = 0, convert: bool = False
) -> Rows:
    """A DataFrame's feature columns (a file chunk, an input example) checked like JSON rows.

    The check is vectorised per column; the first bad cell in row order is then worded by the
    same `_cell` that checks JSON bodies, so a bad row reads the same from a file and from a
    request. Columns that are not features are ignored (a file may carry ids or labels).
    """
    check_names(frame.columns, schema, "columns", extra_ok=True)
    columns: list[np.ndarray] = []
    first_bad = len(frame)
    for feature in schema.features:
        values, bad = _column(frame[feature.name], feature, schema.accepts_missing, convert)
        if bad.any():
            first_bad = min(first_bad, int(np.argmax(bad)))
        columns.append(values)
    if first_bad < len(frame):
        raw = frame.iloc[first_bad]
        cells([_python(raw[n]) for n in schema.names], schema, f"row {offset + first_bad}", convert)
        raise AssertionError("a bad cell was found but not worded")  # pragma: no cover
    dtype = np.float64 if not schema.categorical else object
    X = np.column_stack(columns).astype(dtype, copy=False) if columns else np.empty((0, 0))
    return Rows(X.reshape(len(frame), len(schema.names)), batch=True)


def _column(
    col: pd.Series, feature: Feature, missing_ok: bool, convert: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The column's values and a mask of the cells `_cell` would refuse."""
    if feature.kind == "numeric":
        if col.dtype.kind in "iuf":
            values = col.to_numpy(dtype=np.float64)
        else:
            numbers = [_number(v, convert) for v in col.to_numpy(dtype=object)]
            values = np.array([math.inf if n is None else n for n in numbers], dtype=np.float64)
        nan = np.isnan(values)
        return values, ~(np.isfinite(values) | (nan & missing_ok))
    cells_ = col.to_numpy(dtype=object)
    out = np.empty(len(cells_), dtype=object)
    bad = np.zeros(len(cells_), dtype=bool)
    for i, v in enumerate(cells_):
        if _missing(v):
            out[i] = None
        elif isinstance(v, str | int | float | np.integer | np.floating) and not isinstance(
            v, bool | np.bool_
        ):
            out[i] = str(_python(v))
        else:
            bad[i] = True
    return out, bad


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

"""MLflow's `/invocations` bodies → `Rows`, accepting what `mlflow models serve` accepts.

The reference is MLflow 3.17's scoring server (`mlflow.pyfunc.scoring_server`) and its schema
enforcement (`mlflow.models.utils._enforce_schema`) for a model with a column signature,
checked case by case against a real server (tests/integration/test_mlflow_compat.py):

- JSON with exactly one of `dataframe_split`, `dataframe_records`, `instances`, `inputs`;
  any other top-level key (`params` too) is ignored, as a scikit-learn model takes no params.
- Columns are matched by name: extra columns are dropped, a missing one is refused, and
  positional data (a split without `columns`, `instances` of lists) is refused.
- Cells are cast as pandas' `astype(float64)` casts them (`validation.cells(convert=True)`).
- `text/csv` is read with `pandas.read_csv` and the signature's dtypes, as MLflow reads it;
  Parquet (`application/vnd.apache.parquet`) with `pandas.read_parquet`.

The common case, a well-formed JSON body, never builds a DataFrame: MLflow's pandas route
costs milliseconds a request, this one microseconds. Deliberate differences are listed in
docs/serving.md ("Differences from `mlflow models serve`").
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.core.schema import FeatureSchema
from serving.validation import (
    InvalidInput,
    MalformedBody,
    Rows,
    SchemaMismatch,
    UnsupportedMediaType,
    cells,
    check_count,
    check_names,
    frame_rows,
    loads,
    matrix,
)

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON, CSV, PARQUET = "application/json", "text/csv", "application/vnd.apache.parquet"
_REQUIRED = "The input must be a JSON object with exactly one of the input fields " + ", ".join(
    f"'{k}'" for k in FORMATS
)


def media_type(content_type: str | None) -> str:
    """The request's media type, refused (415) as MLflow refuses it, or when absent.

    Unlike MLflow, the type is matched case-insensitively (RFC 9110) and a missing header is
    a 415, not MLflow's 500.
    """
    if not content_type:
        raise UnsupportedMediaType(f"no Content-Type: send one of {JSON}, {CSV}, {PARQUET}")
    mime, *pairs = (part.strip() for part in content_type.split(";"))
    params = dict(pair.partition("=")[::2] for pair in pairs)
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType("The scoring server only supports UTF-8")
    unknown = sorted(set(params) - {"charset"})
    if unknown:
        raise UnsupportedMediaType(f"Unrecognized content type parameters: {', '.join(unknown)}")
    mime = mime.lower()
    if mime not in (JSON, CSV, PARQUET):
        raise UnsupportedMediaType(
            f"content type must be one of {JSON}, {CSV}, {PARQUET}; got '{content_type}'"
        )
    return mime


def invocation_rows(mime: str, body: bytes, schema: FeatureSchema, max_rows: int) -> Rows:
    if mime == JSON:
        return parse_invocations(loads(body, constants=True), schema, max_rows)
    frame = _csv(body, schema) if mime == CSV else _parquet(body)
    check_count(len(frame), max_rows, "input")
    return frame_rows(frame, schema, convert=True)


def parse_invocations(body: Any, schema: FeatureSchema, max_rows: int) -> Rows:
    if not isinstance(body, dict):
        raise InvalidInput(f"{_REQUIRED}; got a {_json_type(body)}")
    keys = [k for k in FORMATS if k in body]
    if len(keys) != 1:
        raise InvalidInput(f"{_REQUIRED}; got the fields {sorted(body)}")
    key, value = keys[0], body[keys[0]]
    if key == "dataframe_split":
        return Rows(_split(value, schema, max_rows), batch=True)
    if isinstance(value, list):
        return Rows(_records(value, schema, max_rows, key), batch=True)
    if isinstance(value, dict) and key != "dataframe_records":
        return Rows(_columns(value, schema, max_rows, key), batch=True)
    raise InvalidInput(f"{key} must be a list of records (objects by feature name)")


def _split(value: Any, schema: FeatureSchema, max_rows: int) -> np.ndarray:
    if (
        not isinstance(value, dict)
        or "data" not in value
        or set(value) - {"columns", "data", "index"}
    ):
        raise InvalidInput('dataframe_split must be an object with "columns", "data" (and "index")')
    columns, data, index = value.get("columns"), value["data"], value.get("index")
    if columns is None:
        raise SchemaMismatch("dataframe_split has no columns: name the features in 'columns'")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput("dataframe_split.columns must be a list of column names")
    if len(set(columns)) != len(columns):
        raise SchemaMismatch("dataframe_split.columns has duplicate names")
    if not isinstance(data, list):
        raise InvalidInput("dataframe_split.data must be a list of rows")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise InvalidInput("dataframe_split.index must have one entry per row of data")
    check_names(columns, schema, "dataframe_split.columns", extra_ok=True)
    check_count(len(data), max_rows, "dataframe_split.data")
    # Extra columns are dropped: pick each feature's position once for all rows.
    picks = None if columns == schema.names else [columns.index(n) for n in schema.names]
    out = []
    for i, r in enumerate(data):
        if not isinstance(r, list) or len(r) != len(columns):
            raise InvalidInput(f"dataframe_split.data row {i}: expected {len(columns)} values")
        out.append(cells(r if picks is None else [r[p] for p in picks], schema, f"row {i}", True))
    return matrix(out, schema)


def _records(value: list[Any], schema: FeatureSchema, max_rows: int, field: str) -> np.ndarray:
    if not value:  # MLflow: an empty frame has none of the signature's columns
        raise SchemaMismatch(f"{field} is empty: send at least one row")
    check_count(len(value), max_rows, field)
    names = schema.names
    out = []
    absent_checked = False
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise SchemaMismatch(
                f"{field} row {i}: expected an object by feature name; positional rows are not "
                "matched to features"
            )
        try:
            values = [record[n] for n in names]
        except KeyError:
            # As in a DataFrame built from records, a feature some record lacks is missing
            # there (null); one that no record has is a missing column.
            if not absent_checked:
                seen = {k for r in value if isinstance(r, dict) for k in r}
                check_names(seen, schema, field, extra_ok=True)
                absent_checked = True
            values = [record.get(n) for n in names]
        out.append(cells(values, schema, f"row {i}", True))
    return matrix(out, schema)


def _columns(value: dict[str, Any], schema: FeatureSchema, max_rows: int, field: str) -> np.ndarray:
    """`{"feature": [values...]}`; a scalar stands for every row, as pandas broadcasts it."""
    check_names(value, schema, field, extra_ok=True)
    features = [value[n] for n in schema.names]
    lengths = {len(v) for v in features if isinstance(v, list)}
    if len(lengths) > 1:
        raise SchemaMismatch(f"{field}: every feature must have the same number of values")
    n = lengths.pop() if lengths else 1
    check_count(n, max_rows, field)
    by_column = [v if isinstance(v, list) else [v] * n for v in features]
    rows = zip(*by_column, strict=True)
    return matrix([cells(r, schema, f"row {i}", True) for i, r in enumerate(rows)], schema)


def _csv(body: bytes, schema: FeatureSchema) -> pd.DataFrame:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"request body is not UTF-8 text ({exc.reason})") from exc
    dtypes = {f.name: "float64" if f.kind == "numeric" else object for f in schema.features}
    try:
        return pd.read_csv(io.StringIO(text), dtype=dtypes)
    except (ValueError, pd.errors.ParserError) as exc:
        raise InvalidInput(
            f"could not read the body as CSV with the model's columns: {exc}"
        ) from exc


def _parquet(body: bytes) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(body))
    except Exception as exc:  # pyarrow raises its own types for a body that is not Parquet
        raise InvalidInput(f"could not read the body as Parquet: {exc}") from exc


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )

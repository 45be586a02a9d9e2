"""DataFrames and Arrow tables from prediction rows: fixed columns plus one column per feature.

The features arrive as JSON text (the column cast to text in SQL, so no per-row decoding in
the driver) and are parsed with one `json.loads` over the whole window, then expanded by pandas
into typed columns; about 0.15 s per 100k iris rows (docs/prediction-store.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lifecycle.core.store.tables import dumps

# Column -> dtype of the fixed columns; None: whatever the values are (the raw model output).
WINDOW_COLUMNS: dict[str, Any] = {
    "request_id": object,
    "created_at": "datetime64[ns, UTC]",
    "source": object,
    "model_version": object,
    "run_id": object,
    "prediction": None,
    "label": object,
    "latency_ms": "float64",
    "feedback": object,
}
LABELLED_COLUMNS: dict[str, Any] = {
    "request_id": object,
    "created_at": "datetime64[ns, UTC]",
    "model_version": object,
    "label": object,
    "actual": object,
}
FEATURE_PREFIX = "features."


def empty_frame(columns: dict[str, Any]) -> pd.DataFrame:
    """The fixed columns with their dtypes and no rows (no feature columns: none are known)."""
    return pd.DataFrame({name: pd.Series(dtype=dtype or object) for name, dtype in columns.items()})


def predictions_frame(
    rows: Sequence[Any],
    columns: dict[str, Any],
    *,
    reverse: bool = False,
    json_text: Sequence[str] = (),
) -> pd.DataFrame:
    """Rows holding the fixed columns in order, then the features JSON text and the feature
    names (a chunk row's, whose features are an array; None for an object), into a frame of
    the fixed columns followed by the features (in reverse row order if asked). Strings in the
    `json_text` columns are JSON still to decode."""
    if not rows:
        return empty_frame(columns)
    if reverse:
        rows = rows[::-1]
    frame = pd.DataFrame.from_records(rows, columns=[*columns, "__features", "__names"])
    texts, names = frame.pop("__features"), frame.pop("__names")
    for name in json_text:
        frame[name] = pd.Series(decode_json(frame[name].tolist()))
    # Datetimes (PostgreSQL) or SQLite's stored UTC text, whose fractional part may vary.
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
    frame = frame.astype({name: dtype for name, dtype in columns.items() if dtype is not None})
    features = expand_features(texts.tolist(), names.tolist())
    features.columns = [
        f"{FEATURE_PREFIX}{name}" if name in columns else name for name in features.columns
    ]
    return pd.concat([frame, features], axis=1)


def decode_json(values: Sequence[Any]) -> list[Any]:
    """Decode the strings among values (one json.loads for all); other values stay as they are."""
    texts = [value for value in values if isinstance(value, str)]
    if not texts:
        return list(values)
    decoded = iter(json.loads("[" + ",".join(texts) + "]"))
    return [next(decoded) if isinstance(value, str) else value for value in values]


def expand_features(
    texts: Sequence[str | None], names: Sequence[str | None] | None = None
) -> pd.DataFrame:
    """JSON objects (name -> value), or JSON arrays in the order of the row's `names` (JSON
    text of a list: a chunk row's), into one column per name, in name order (PostgreSQL's
    JSONB does not keep the key order); numbers become float64, a name missing from a row is
    NaN there, nested values stay Python objects."""
    parsed = json.loads("[" + ",".join(text or "{}" for text in texts) + "]")
    index = pd.RangeIndex(len(parsed))
    keyed: dict[str, list[int]] = {}
    for i, key in enumerate(names if names is not None else ()):
        if key is not None and isinstance(parsed[i], list):
            keyed.setdefault(key, []).append(i)
    if not keyed:
        features = pd.DataFrame([_object(item) for item in parsed], index=index)
    else:
        # Arrays of one set of names become a matrix at once, not a dict per row.
        in_arrays = {i for rows in keyed.values() for i in rows}
        rest = [i for i in range(len(parsed)) if i not in in_arrays]
        parts = [pd.DataFrame([_object(parsed[i]) for i in rest], index=pd.Index(rest))]
        for key, rows in keyed.items():
            columns = json.loads(key)
            parts.append(pd.DataFrame([parsed[i] for i in rows], index=rows, columns=columns))
        features = pd.concat(parts).reindex(index)
    features = features[sorted(features.columns)]
    numeric = [
        name
        for name in features.columns
        if pd.api.types.is_numeric_dtype(features[name])
        and not pd.api.types.is_bool_dtype(features[name])
    ]
    return features.astype(dict.fromkeys(numeric, "float64"))


def _object(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else {}


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table; an object column Arrow cannot type (say, predictions that
    are numbers in one version and strings in another) is kept as JSON text."""
    arrays = []
    for name in frame.columns:
        column = frame[name]
        try:
            arrays.append(pa.Array.from_pandas(column))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            texts = [None if value is None else dumps(value) for value in column]
            arrays.append(pa.array(texts, pa.string()))
    return pa.Table.from_arrays(arrays, names=[str(name) for name in frame.columns])


def interpolated(rows: Sequence[Any], percentiles: Sequence[float]) -> list[tuple[Any, ...]]:
    """(version, n, *percentiles) from (version, latency) rows sorted by version and latency,
    interpolated linearly between ranks (numpy's default method: percentile_cont's)."""
    if not rows:
        return []
    versions = np.array([row[0] for row in rows], dtype=object)
    latencies = np.array([row[1] for row in rows], dtype="float64")
    starts = np.flatnonzero(np.r_[True, versions[1:] != versions[:-1]])
    out = []
    for start, end in zip(starts, [*starts[1:], len(rows)], strict=True):
        values = np.quantile(latencies[start:end], percentiles)
        out.append((versions[start], int(end - start), *map(float, values)))
    return out

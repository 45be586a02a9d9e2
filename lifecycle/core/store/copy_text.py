"""COPY's CSV text built from columns (PredictionColumns), with Arrow's vectorised kernels.

The text must store exactly what the row path stores (copy.py `to_csv`, the INSERT path):
JSON written by Python's `json.dumps`, so a float is its `repr` ("5.0", "1e-05"), NaN and
infinities are JSON null, and a missing probabilities object is JSON null. Arrow formats a
double with the same shortest round-trip digits as `repr` but its own notation: integral
values lose their ".0" (added back here) and it switches to exponents at other magnitudes
(those values, rare in features and probabilities, are formatted by `repr`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lifecycle.core.store.columns import PredictionColumns
from lifecycle.core.store.tables import dumps

# Where Arrow's notation and repr's agree (checked against repr on millions of values).
_POSITIONAL = (1e-4, 1e9)


class NotColumnar(ValueError):
    """The batch (or the table) has a shape the columnar text does not cover."""


def copy_text(batch: PredictionColumns, columns: Sequence[str]) -> bytes:
    """The batch as COPY CSV, `columns` in order: every value quoted, SQL NULL unquoted."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    n = len(batch)
    builders: dict[str, Callable[[], Any]] = {
        "request_id": lambda: _strings(batch.request_ids),
        "created_at": lambda: _repeat(batch.created_at.isoformat(), n),
        "source": lambda: _repeat(batch.source, n),
        "model_name": lambda: _repeat(batch.model_name, n),
        "model_version": lambda: _repeat(batch.model_version, n),
        "run_id": lambda: _repeat(batch.run_id, n),
        "features": lambda: json_objects(batch.feature_names, batch.features),
        "prediction": lambda: _json_values(batch.predictions),
        "label": lambda: _by_value(np.asarray(batch.labels, dtype=object), str),
        "probabilities": lambda: (
            _repeat("null", n)
            if batch.probabilities is None or batch.class_labels is None
            else json_objects(batch.class_labels, batch.probabilities)
        ),
        "latency_ms": lambda: _repeat(repr(float(batch.latency_ms)), n),
        "recheck": lambda: _repeat("t" if batch.recheck else "f", n),
    }
    unknown = [c for c in columns if c not in builders]
    if unknown:
        raise NotColumnar(f"no columnar value for column(s) {', '.join(unknown)}")
    table = pa.table({name: builders[name]() for name in columns})
    out = pa.BufferOutputStream()
    # "all_valid" quotes every value and leaves nulls bare: COPY's CSV reads a bare empty
    # field as NULL and a quoted one as the empty string, as the row path writes them.
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    pacsv.write_csv(table, out, options)
    return bytes(out.getvalue())


def json_objects(names: Sequence[str], matrix: np.ndarray) -> Any:
    """One JSON object per row, `{"name": value, ...}`, as json.dumps writes a dict."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if matrix.dtype.kind != "f":
        raise NotColumnar(f"values of type {matrix.dtype} are not formatted as columns")
    n = matrix.shape[0]
    parts: list[Any] = []
    for j, name in enumerate(names):
        key = ("{" if j == 0 else ", ") + json.dumps(name) + ": "
        parts.append(pa.scalar(key))
        parts.append(float_texts(matrix[:, j]))
    parts.append(pa.scalar("}"))
    if not names:
        return _repeat("{}", n)
    return pc.binary_join_element_wise(*parts, pa.scalar(""))


def float_texts(values: np.ndarray) -> Any:
    """Each value as json.dumps writes a float: repr, or null for NaN and infinities."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.asarray(values, dtype=np.float64)
    text = pc.cast(pa.array(values), pa.string())
    finite = np.isfinite(values)
    integral = finite & (values == np.floor(values))
    text = pc.if_else(
        pa.array(integral), pc.binary_join_element_wise(text, pa.scalar(".0"), pa.scalar("")), text
    )
    magnitude = np.abs(values)
    low, high = _POSITIONAL
    odd = finite & (values != 0) & ((magnitude < low) | (magnitude >= high))
    if not finite.all() or odd.any():
        fixed = text.to_numpy(zero_copy_only=False).astype(object)
        fixed[~finite] = "null"
        for i in np.flatnonzero(odd):
            fixed[i] = repr(float(values[i]))
        text = pa.array(fixed, pa.string())
    return text


def _json_values(values: np.ndarray) -> Any:
    """json.dumps of each value; a model's outputs are few distinct classes, formatted once."""
    if values.dtype.kind == "f":
        return float_texts(values)
    return _by_value(values, lambda v: dumps(_plain(v)))


def _by_value(values: np.ndarray, text: Callable[[Any], str]) -> Any:
    import pyarrow as pa

    try:
        uniques, inverse = np.unique(values, return_inverse=True)
    except TypeError:  # values that do not sort together (mixed types): one at a time
        return pa.array([text(v) for v in values.tolist()], pa.string())
    return pa.array([text(u) for u in uniques.tolist()], pa.string()).take(
        pa.array(inverse.reshape(-1))
    )


def _strings(values: Sequence[str]) -> Any:
    import pyarrow as pa

    return values if isinstance(values, pa.Array) else pa.array(values, pa.string())


def _repeat(value: str | None, n: int) -> Any:
    import pyarrow as pa

    return pa.nulls(n, pa.string()) if value is None else pa.repeat(pa.scalar(value), n)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value

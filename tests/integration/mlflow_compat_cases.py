"""Requests sent both to `mlflow models serve` and to Lifecycle, for a tabular classifier.

Taken from MLflow's tests/pyfunc/test_scoring_server.py (the cases that apply to a model
with a column signature) and from the scoring server's source. `lifecycle` is set only
where Lifecycle answers differently on purpose; docs/serving.md lists each difference.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

ROW = [5.1, 3.5, 1.4, 0.2]
ROW2 = [6.7, 3.0, 5.2, 2.3]
JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"

MAX_ROWS = 1000
MAX_BYTES = 1_048_576

Body = Callable[[list[str]], bytes]


@dataclass(frozen=True)
class Case:
    id: str
    content_type: str | None
    body: Body
    lifecycle: int | None = None  # Lifecycle's status where it differs from MLflow's on purpose


def js(make: Callable[[list[str]], Any]) -> Body:
    return lambda names: json.dumps(make(names)).encode()


def raw(text: str) -> Body:
    return lambda names: text.replace("NAMES", json.dumps(names)).encode()


def rec(names: list[str], row: list[Any] = ROW, **cells: Any) -> dict[str, Any]:
    out = dict(zip(names, row, strict=True))
    for i, value in cells.items():
        out[names[int(i[1:])]] = value
    return out


def split(names: list[str], rows: list[list[Any]] | None = None) -> dict[str, Any]:
    return {"dataframe_split": {"columns": names, "data": rows or [ROW]}}


def frame(names: list[str], rows: list[list[Any]] | None = None) -> pd.DataFrame:
    return pd.DataFrame(rows or [ROW, ROW2], columns=names)


def parquet(df: pd.DataFrame) -> bytes:
    out = io.BytesIO()
    df.to_parquet(out)
    return out.getvalue()


def csv(make: Callable[[list[str]], pd.DataFrame], index: bool = False) -> Body:
    return lambda names: make(names).to_csv(index=index).encode()


CASES = [
    # Every JSON format.
    Case("split", JSON, js(lambda n: split(n, [ROW, ROW2]))),
    Case(
        "split-index",
        JSON,
        js(lambda n: {"dataframe_split": {**split(n)["dataframe_split"], "index": [7]}}),
    ),
    Case(
        "split-reordered",
        JSON,
        js(lambda n: {"dataframe_split": {"columns": n[::-1], "data": [ROW[::-1]]}}),
    ),
    Case(
        "split-extra-column",
        JSON,
        js(lambda n: {"dataframe_split": {"columns": [*n, "id"], "data": [[*ROW, "a"]]}}),
    ),
    Case("records", JSON, js(lambda n: {"dataframe_records": [rec(n), rec(n, ROW2)]})),
    Case("records-extra-column", JSON, js(lambda n: {"dataframe_records": [{**rec(n), "id": 1}]})),
    Case("instances-records", JSON, js(lambda n: {"instances": [rec(n), rec(n, ROW2)]})),
    Case(
        "instances-columns", JSON, js(lambda n: {"instances": {k: [v] for k, v in rec(n).items()}})
    ),
    Case("inputs-columns", JSON, js(lambda n: {"inputs": {k: [v] for k, v in rec(n).items()}})),
    Case("inputs-records", JSON, js(lambda n: {"inputs": [rec(n)]})),
    Case("inputs-scalar-row", JSON, js(lambda n: {"inputs": rec(n)})),
    Case("inputs-scalar-broadcast", JSON, js(lambda n: {"inputs": {**rec(n), n[3]: [0.2, 2.3]}})),
    Case("params-ignored", JSON, js(lambda n: {**split(n), "params": {"a": 1}})),
    Case("unknown-key-ignored", JSON, js(lambda n: {**split(n), "foo": 1})),
    Case("json-charset", "application/json; charset=UTF-8", js(split)),
    # Cell conversions.
    Case(
        "int-cells",
        JSON,
        js(lambda n: {"dataframe_records": [dict(zip(n, [5, 3, 1, 0], strict=True))]}),
    ),
    Case("numeric-string", JSON, js(lambda n: {"dataframe_records": [rec(n, c3="0.2")]})),
    Case("bool-cell", JSON, js(lambda n: {"dataframe_records": [rec(n, c3=True)]})),
    Case("null-cell", JSON, js(lambda n: {"dataframe_records": [rec(n, c3=None)]})),
    Case(
        "nan-literal",
        JSON,
        raw('{"dataframe_split": {"columns": NAMES, "data": [[5.1, 3.5, 1.4, NaN]]}}'),
    ),
    Case("nan-string", JSON, js(lambda n: {"dataframe_records": [rec(n, c3="nan")]})),
    Case(
        "key-absent-in-one-record",
        JSON,
        js(
            lambda n: {
                "dataframe_records": [rec(n), {k: v for k, v in rec(n).items() if k != n[3]}]
            }
        ),
    ),
    Case(
        "infinity-literal",
        JSON,
        raw('{"dataframe_split": {"columns": NAMES, "data": [[5.1, 3.5, 1.4, Infinity]]}}'),
    ),
    Case("inf-string", JSON, js(lambda n: {"dataframe_records": [rec(n, c3="inf")]})),
    Case("word-string", JSON, js(lambda n: {"dataframe_records": [rec(n, c3="abc")]})),
    Case("empty-string", JSON, js(lambda n: {"dataframe_records": [rec(n, c3="")]})),
    Case("list-cell", JSON, js(lambda n: {"dataframe_records": [rec(n, c3=[1])]})),
    Case("huge-int", JSON, js(lambda n: {"dataframe_records": [rec(n, c3=10**400)]})),
    # Shapes MLflow refuses.
    Case(
        "missing-column",
        JSON,
        js(lambda n: {"dataframe_records": [{k: v for k, v in rec(n).items() if k != n[3]}]}),
    ),
    Case("split-without-columns", JSON, js(lambda n: {"dataframe_split": {"data": [ROW]}})),
    Case(
        "split-duplicate-columns",
        JSON,
        js(lambda n: {"dataframe_split": {"columns": [*n, n[3]], "data": [[*ROW, 0.3]]}}),
    ),
    Case(
        "split-short-row",
        JSON,
        js(lambda n: {"dataframe_split": {"columns": n, "data": [ROW[:3]]}}),
    ),
    Case(
        "split-unknown-field",
        JSON,
        js(lambda n: {"dataframe_split": {**split(n)["dataframe_split"], "foo": 1}}),
    ),
    Case("split-not-object", JSON, js(lambda n: {"dataframe_split": [ROW]})),
    # MLflow scores one row twice when index and data disagree; Lifecycle refuses.
    Case(
        "split-index-mismatch",
        JSON,
        js(lambda n: {"dataframe_split": {**split(n)["dataframe_split"], "index": [1, 2]}}),
        lifecycle=400,
    ),
    Case("split-empty", JSON, js(lambda n: {"dataframe_split": {"columns": n, "data": []}})),
    Case("records-empty", JSON, js(lambda n: {"dataframe_records": []})),
    Case("records-not-list", JSON, js(lambda n: {"dataframe_records": rec(n)})),
    Case("records-positional", JSON, js(lambda n: {"dataframe_records": [ROW]})),
    Case("instances-positional", JSON, js(lambda n: {"instances": [ROW]})),
    Case("inputs-positional", JSON, js(lambda n: {"inputs": [ROW]})),
    Case(
        "inputs-unequal-columns",
        JSON,
        js(lambda n: {"inputs": {**{k: [v] for k, v in rec(n).items()}, n[3]: [0.2, 0.3]}}),
    ),
    Case("inputs-string", JSON, js(lambda n: {"inputs": "x"})),
    Case("two-formats", JSON, js(lambda n: {**split(n), "instances": [rec(n)]})),
    Case("no-format", JSON, js(lambda n: {"foo": 1})),
    Case("list-body", JSON, js(lambda n: [rec(n)])),
    Case("bad-json", JSON, raw("{nope")),
    Case("not-utf8", JSON, lambda n: b'{"dataframe_records": [{"a": "\xff"}]}'),
    Case("lone-surrogate-key", JSON, raw('{"\\ud800": 1}')),
    Case(
        "lone-surrogate-column",
        JSON,
        lambda n: b'{"dataframe_records": [{"\\ud800": 1, ' + js(rec)(n)[1:] + b"]}",
    ),
    # CSV and Parquet.
    Case("csv", CSV, csv(frame)),
    Case("csv-with-index", CSV, csv(frame, index=True)),
    Case("csv-charset", "text/csv; charset=utf-8", csv(frame)),
    Case("csv-missing-cell", CSV, csv(lambda n: frame(n, [[5.1, 3.5, 1.4, None]]))),
    Case("csv-word-cell", CSV, lambda n: (",".join(n) + "\n5.1,3.5,1.4,abc\n").encode()),
    Case("csv-missing-column", CSV, lambda n: (",".join(n[:3]) + "\n5.1,3.5,1.4\n").encode()),
    Case(
        "csv-extra-column", CSV, lambda n: (",".join([*n, "id"]) + "\n5.1,3.5,1.4,0.2,q\n").encode()
    ),
    Case("csv-header-only", CSV, lambda n: (",".join(n) + "\n").encode()),
    Case("csv-empty", CSV, lambda n: b""),
    Case("csv-latin1", "text/csv; charset=latin-1", csv(frame)),
    Case("parquet", PARQUET, lambda n: parquet(frame(n))),
    Case("parquet-float32", PARQUET, lambda n: parquet(frame(n).astype("float32"))),
    Case("parquet-missing-cell", PARQUET, lambda n: parquet(frame(n, [[5.1, 3.5, 1.4, None]]))),
    Case("parquet-extra-column", PARQUET, lambda n: parquet(frame(n).assign(id="q"))),
    # MLflow refuses int64 and bool Parquet columns for a double; Lifecycle converts them as
    # MLflow itself converts JSON and CSV cells.
    Case("parquet-int64", PARQUET, lambda n: parquet(frame(n, [[5, 3, 1, 0]])), lifecycle=200),
    Case(
        "parquet-bool", PARQUET, lambda n: parquet(frame(n).assign(**{n[3]: True})), lifecycle=200
    ),
    Case("parquet-garbage", PARQUET, lambda n: b"garbage"),
    # Content types.
    Case("x-parquet", "application/x-parquet", lambda n: parquet(frame(n))),
    Case("text-plain", "text/plain", js(split)),
    Case("json-unknown-parameter", "application/json; format=pandas-split", js(split)),
    # MLflow matches the media type case-sensitively; RFC 9110 says it is case-insensitive.
    Case("json-upper-case", "APPLICATION/JSON", js(split), lifecycle=200),
    # Limits (the Lifecycle under test runs with MAX_ROWS and MAX_BYTES); MLflow has none.
    Case("rows-over-limit", JSON, js(lambda n: split(n, [ROW] * (MAX_ROWS + 1))), lifecycle=413),
    Case(
        "body-over-limit", JSON, js(lambda n: {**split(n), "pad": " " * MAX_BYTES}), lifecycle=413
    ),
    # MLflow answers 500 (it splits a header that is not there).
    Case("no-content-type", None, js(split), lifecycle=415),
]

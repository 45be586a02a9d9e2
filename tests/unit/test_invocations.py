"""MLflow's request shapes, missing values, limits and lone surrogates, in process.

The case-by-case comparison with a real `mlflow models serve` is
tests/integration/test_mlflow_compat.py; these pin the rules it relies on.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from lifecycle.core.schema import Feature, FeatureSchema
from lifecycle.core.settings import Settings
from serving import bodies, predictors, validation
from serving.api.app import create_app
from serving.runtime import MlflowRegistryProbe, ModelHolder, ModelTarget
from training.pipeline import build_pipeline, imputes_missing

NAMES = ("sl", "sw", "pl", "pw")
STRICT = FeatureSchema(
    tuple(Feature(n, "numeric") for n in NAMES), "target", (0, 1, 2), ("a", "b", "c")
)
IMPUTING = replace(STRICT, accepts_missing=True)
ROW = [5.1, 3.5, 1.4, 0.2]


def _json(rows: list[list[object]]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": list(NAMES), "data": rows}}).encode()


def test_extra_columns_are_dropped_and_cells_convert_as_mlflow_converts_them() -> None:
    body = {
        "dataframe_records": [
            {"id": "x", "sl": "5.1", "sw": True, "pl": 1, "pw": " 0.2 "},
            {"sl": 5.1, "sw": 3.5, "pl": 1.4, "pw": 0.2},
        ]
    }
    assert bodies.parse_invocations(body, STRICT, 10).X.tolist() == [[5.1, 1.0, 1.0, 0.2], ROW]
    scalar_row = {"inputs": dict(zip(NAMES, ROW, strict=True)), "params": {"ignored": 1}}
    assert bodies.parse_invocations(scalar_row, STRICT, 10).X.tolist() == [ROW]


def test_missing_values_are_scored_only_for_a_model_that_imputes() -> None:
    body = _json([[5.1, 3.5, 1.4, None]])
    rows = bodies.invocation_rows(bodies.JSON, body, IMPUTING, 10)
    assert math.isnan(rows.X[0, 3])
    with pytest.raises(validation.InvalidInput, match="does not impute missing values"):
        bodies.invocation_rows(bodies.JSON, body, STRICT, 10)
    # /predict takes a null the same way; a file chunk its empty cell.
    assert math.isnan(validation.parse_predict({"features": [1, 2, 3, None]}, IMPUTING, 1).X[0, 3])
    chunk = pd.DataFrame([[5.1, 3.5, 1.4, np.nan]], columns=list(NAMES))
    assert math.isnan(validation.frame_rows(chunk, IMPUTING).X[0, 3])
    with pytest.raises(validation.InvalidInput, match="row 0: feature 'pw'"):
        validation.frame_rows(chunk, STRICT)


def test_a_record_without_a_feature_is_missing_there_but_no_record_with_it_is_refused() -> None:
    partial = {"dataframe_records": [dict(zip(NAMES, ROW, strict=True)), {"sl": 1, "sw": 2}]}
    X = bodies.parse_invocations(partial, IMPUTING, 10).X
    assert math.isnan(X[1, 2]) and math.isnan(X[1, 3])
    with pytest.raises(validation.SchemaMismatch, match="missing feature"):
        bodies.parse_invocations({"dataframe_records": [{"sl": 1}]}, IMPUTING, 10)


@pytest.mark.parametrize(
    ("content_type", "error"),
    [
        (None, "no Content-Type"),
        ("text/plain", "content type must be one of"),
        ("text/csv; charset=latin-1", "only supports UTF-8"),
        ("application/json; format=pandas-split", "Unrecognized content type parameters"),
    ],
)
def test_content_types_mlflow_refuses_are_415(content_type: str | None, error: str) -> None:
    with pytest.raises(validation.UnsupportedMediaType, match=error):
        bodies.media_type(content_type)


def test_csv_with_an_index_column_and_parquet_read_like_json() -> None:
    frame = pd.DataFrame([ROW, ROW], columns=list(NAMES))
    out = io.BytesIO()
    frame.to_parquet(out)
    for mime, body in (
        (bodies.CSV, frame.to_csv().encode()),
        ("text/csv; charset=utf-8", frame.to_csv(index=False).encode()),
        (bodies.PARQUET, out.getvalue()),
    ):
        rows = bodies.invocation_rows(bodies.media_type(mime), body, STRICT, 10)
        assert rows.X.tolist() == [ROW, ROW], mime


def test_row_and_body_limits_are_413_naming_the_setting() -> None:
    with pytest.raises(validation.PayloadTooLarge, match="set LIFECYCLE_MAX_BATCH_ROWS"):
        bodies.invocation_rows(bodies.JSON, _json([ROW] * 3), STRICT, 2)
    with pytest.raises(validation.PayloadTooLarge, match="set LIFECYCLE_MAX_BATCH_ROWS"):
        bodies.invocation_rows(bodies.CSV, pd.DataFrame([ROW] * 3).to_csv().encode(), STRICT, 2)
    defaults = Settings()
    assert defaults.max_batch_rows >= 100_000
    assert defaults.max_body_bytes >= 64 * 1024 * 1024


def test_lone_surrogates_become_replacement_characters() -> None:
    parsed = validation.loads(b'{"\\ud800": ["\\uDFFF x", {"k\\udbff": "\\ud83d\\ude00"}]}')
    assert parsed == {"\ufffd": ["\ufffd x", {"k\ufffd": "\U0001f600"}]}
    json.dumps(parsed).encode("utf-8")  # encodable: nothing downstream can fail on it


def test_ordinary_bodies_skip_the_surrogate_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def walked(value: object) -> object:
        raise AssertionError("walked a body without a surrogate escape")

    monkeypatch.setattr(validation, "_without_surrogates", walked)
    assert validation.loads(_json([ROW]))["dataframe_split"]["data"] == [ROW]


def test_the_linear_path_imputes_like_the_fitted_pipeline() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 4)), columns=list(NAMES))
    y = (X["sl"] + X["pw"] > 0).astype(int) + (X["sw"] > 1).astype(int)
    pipeline = build_pipeline(IMPUTING, "logistic_regression", {}, 0).fit(X, y)
    linear, *_, dataframe = predictors.sklearn_candidates(pipeline, IMPUTING)
    assert linear.path == "linear"
    rows = np.array([ROW, [np.nan, 3.5, np.nan, 0.2], [np.nan] * 4])
    assert predictors.same_output(linear.predict(rows), dataframe.predict(rows))


def test_training_records_whether_the_pipeline_imputes() -> None:
    assert imputes_missing(build_pipeline(STRICT, "random_forest", {}, 0), STRICT)
    assert not imputes_missing(Pipeline([("m", LogisticRegression())]), STRICT)
    assert FeatureSchema.from_metadata(IMPUTING.to_metadata()).accepts_missing
    legacy = {k: v for k, v in IMPUTING.to_metadata().items() if k != "accepts_missing"}
    assert not FeatureSchema.from_metadata(legacy).accepts_missing


def test_ping_and_invocations_answer_in_mlflows_shape_without_a_model(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
    holder = ModelHolder(ModelTarget("iris", stage="Production"), MlflowRegistryProbe(client))
    app = TestClient(create_app(Settings(data_dir=tmp_path), holder))
    ping = app.get("/ping")
    assert ping.status_code == 503
    assert ping.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    bad = app.post("/invocations", content=b"{}")  # no Content-Type: MLflow answers 500
    assert (bad.status_code, bad.json()["error_code"]) == (415, "BAD_REQUEST")
    assert app.get("/version").text
    assert list(app.post("/predict", json={}).json()) == ["detail"]

"""Input parsing from the feature schema, the native scoring path, and webhook signatures."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lifecycle.core.config import load_datasets, load_training
from lifecycle.core.errors import ConfigError
from lifecycle.core.schema import Feature, FeatureSchema
from lifecycle.core.settings import PROJECT_ROOT
from serving import bodies, predictors, validation
from serving.runtime import ModelTarget
from serving.webhooks import Forbidden, SqlDeliveryLog, Unauthorized, WebhookVerifier, sign
from training import data as data_mod
from training.pipeline import build_pipeline

IRIS = FeatureSchema(
    tuple(Feature(n, "numeric") for n in ("sl", "sw", "pl", "pw")),
    "target",
    (0, 1, 2),
    ("setosa", "versicolor", "virginica"),
)
MIXED = FeatureSchema(
    (Feature("age", "numeric"), Feature("city", "categorical")), "y", ("no", "yes"), ("no", "yes")
)


def test_reference_body_and_features_by_name_give_the_same_row() -> None:
    by_position = validation.parse_predict({"features": [5.1, 3.5, 1.4, 0.2]}, IRIS, 10)
    by_name = validation.parse_predict(
        {"features": {"pw": 0.2, "pl": 1.4, "sw": 3.5, "sl": 5.1}}, IRIS, 10
    )
    assert not by_position.batch
    assert by_position.X.dtype == np.float64
    assert by_position.X.tolist() == by_name.X.tolist() == [[5.1, 3.5, 1.4, 0.2]]


def test_batches_and_the_mlflow_protocol_forms_agree() -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3, 5.2, 2.3]]
    expected = validation.parse_predict({"instances": rows}, IRIS, 10).X.tolist()
    records = [dict(zip(IRIS.names, r, strict=True)) for r in rows]
    for body in (
        {"dataframe_split": {"columns": IRIS.names, "data": rows}},
        {"dataframe_split": {"columns": ["pw", "pl", "sw", "sl"], "data": [r[::-1] for r in rows]}},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": records},
        {"inputs": {n: [r[i] for r in rows] for i, n in enumerate(IRIS.names)}},
    ):
        assert bodies.parse_invocations(body, IRIS, 10).X.tolist() == expected, body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"features": [1, 2, 3]}, "features: expected 4 features (sl, sw, pl, pw), got 3"),
        ({"features": {"sl": 1, "sw": 2, "pl": 3, "px": 4}}, "unknown feature(s) 'px'"),
        ({"features": {"sl": 1, "sw": 2, "pl": 3}}, "missing feature(s) 'pw'"),
        ({"features": [1, 2, 3, float("nan")]}, "feature 'pw' must be a number, got null"),
        ({"features": [1, 2, float("inf"), 4]}, "feature 'pl' must be finite, got inf"),
        ({"features": [1, "2", 3, 4]}, "feature 'sw' must be a number, got '2'"),
        ({"features": [1, True, 3, 4]}, "feature 'sw' must be a number, got bool"),
        ({"features": [1, 2, 3, 10**400]}, "feature 'pw' is out of range"),
        ({"instances": []}, "instances is empty"),
        ({"instances": [[1, 2, 3, 4], [1, 2]]}, "row 1: expected 4 features"),
        ({"features": [1, 2, 3, 4], "instances": []}, "exactly one of"),
        ({}, "exactly one of"),
        ([1, 2, 3, 4], "body must be a JSON object"),
        ({"features": "1,2,3,4"}, "expected a list of 4 values"),
    ],
)
def test_bad_predict_bodies_name_the_problem(body: object, message: str) -> None:
    with pytest.raises(validation.InvalidInput) as err:
        validation.parse_predict(body, IRIS, 2)
    assert message in err.value.message
    assert err.value.status_code == 422


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"dataframe_split": {"columns": ["sl"], "data": [[1]]}}, "missing feature(s) 'sw'"),
        ({"dataframe_split": {"columns": IRIS.names, "data": [[1, 2]]}}, "row 0: expected"),
        ({"dataframe_split": [1]}, 'must be an object with "columns", "data"'),
        ({"dataframe_split": {"data": [[1, 2, 3, 4]]}}, "has no columns"),
        ({"inputs": {"sl": [1], "sw": [1, 2], "pl": [1], "pw": [1]}}, "same number of values"),
        ({"instances": [[1, 2, 3, 4]]}, "positional rows are not matched"),
        ({"dataframe_records": [], "instances": []}, "exactly one of"),
        ({"tensor": []}, "exactly one of"),
    ],
)
def test_bad_invocations_name_the_problem(body: object, message: str) -> None:
    with pytest.raises(validation.InvalidInput) as err:
        bodies.parse_invocations(body, IRIS, 10)
    assert message in err.value.message


def test_strict_json_refuses_nan_and_reports_malformed_bodies() -> None:
    with pytest.raises(validation.InvalidInput, match="NaN is not a valid number"):
        validation.loads(b'{"features": [NaN]}')
    with pytest.raises(validation.MalformedBody, match="malformed JSON"):
        validation.loads(b'{"features": [1,')
    with pytest.raises(validation.MalformedBody, match="not UTF-8"):
        validation.loads(b'{"a": "\xff"}')
    with pytest.raises(validation.MalformedBody, match="nested too deeply"):
        validation.loads(b"[" * 100_000)


def test_categorical_features_accept_strings_numbers_and_null() -> None:
    rows = validation.parse_predict({"instances": [[30, "Oslo"], [40, 7], [50, None]]}, MIXED, 10)
    assert rows.X.dtype == object
    assert rows.X[:, 1].tolist() == ["Oslo", "7", None]
    with pytest.raises(validation.InvalidInput, match="'city' must be a string, got list"):
        validation.parse_predict({"features": [30, ["Oslo"]]}, MIXED, 10)


def test_feedback_labels_normalise_to_the_class_label() -> None:
    assert validation.normalise_label("virginica", IRIS) == "virginica"
    assert validation.normalise_label(2, IRIS) == "virginica"
    assert validation.normalise_label("1", IRIS) == "versicolor"
    with pytest.raises(validation.InvalidInput, match="'tulip' is not a class"):
        validation.normalise_label("tulip", IRIS)


def _fitted(dataset: str, estimator: str) -> tuple[object, FeatureSchema, pd.DataFrame]:
    conf = PROJECT_ROOT / "conf"
    cfg = data_mod.resolve_config(dataset, load_datasets(conf))
    data = data_mod.load(dataset, cfg)
    params = load_training(conf).estimators[estimator].params
    pipeline = build_pipeline(data.schema, estimator, params, 42)
    pipeline.fit(data.X, data.y)
    return pipeline, data.schema, data.X


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest"])
def test_compiled_numpy_path_matches_the_fitted_pipeline_without_warnings(estimator: str) -> None:
    pipeline, schema, X = _fitted("iris", estimator)
    candidates = predictors.sklearn_candidates(pipeline, schema)
    expected = ["compiled", "dataframe"]
    if estimator == "logistic_regression":
        expected.insert(0, "linear")
    assert [c.path for c in candidates] == expected
    matrix = X.to_numpy(dtype=np.float64)
    reference = pipeline.predict_proba(X)  # type: ignore[attr-defined]
    for candidate in candidates:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "X does not have valid feature names" would raise
            out = candidate.predict(matrix)
        assert np.allclose(out[1], reference), candidate.path
        assert out[0].tolist() == pipeline.predict(X).tolist()  # type: ignore[attr-defined]


def test_compiled_path_handles_categorical_columns() -> None:
    frame = pd.DataFrame(
        {"age": [20.0, 30, 40, 50, 60, 70], "city": ["a", "b", "a", "c", "b", "a"]}
    )
    y = pd.Series(["no", "yes", "no", "yes", "yes", "no"])
    pipeline = build_pipeline(MIXED, "logistic_regression", {}, 0).fit(frame, y)
    candidates = predictors.sklearn_candidates(pipeline, MIXED)
    X = validation.matrix([[25.0, "a"], [65.0, "zzz"], [35.0, None]], MIXED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = candidates[0].predict(X)
    assert candidates[0].path == "compiled"  # categorical columns: not the linear path
    assert predictors.same_output(fast, candidates[-1].predict(X))


def test_binary_logistic_regression_linear_path_matches() -> None:
    pipeline, schema, X = _fitted("breast_cancer", "logistic_regression")
    linear = predictors.sklearn_candidates(pipeline, schema)[0]
    assert linear.path == "linear"
    out = linear.predict(X.to_numpy(dtype=np.float64))
    assert np.allclose(out[1], pipeline.predict_proba(X))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("uri", "target"),
    [
        ("models:/iris@champion", ModelTarget("iris", alias="champion")),
        ("models:/iris/Production", ModelTarget("iris", stage="Production")),
        ("models:/iris/3", ModelTarget("iris", version="3")),
    ],
)
def test_model_uri_targets(uri: str, target: ModelTarget) -> None:
    assert ModelTarget.parse(uri) == target


def test_model_uri_that_is_not_a_registry_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected models:/NAME@ALIAS"):
        ModelTarget.parse("runs:/abc/model")


def signed(delivery_id: str, timestamp: str, body: bytes) -> dict[str, str]:
    """The headers MLflow sends for `body`, signed with the tests' secret."""
    return {
        "x-mlflow-delivery-id": delivery_id,
        "x-mlflow-timestamp": timestamp,
        "x-mlflow-signature": sign("s3cret", delivery_id, timestamp, body.decode()),
    }


def test_webhook_verifier_accepts_mlflow_signatures_once() -> None:
    now = 1_700_000_000.0
    verifier = WebhookVerifier("s3cret", clock=lambda: now)
    body = b'{"entity": "model_version_alias", "action": "created"}'
    headers = signed("d-1", str(int(now)), body)
    verifier.verify(headers, body)
    with pytest.raises(Forbidden, match="already received"):
        verifier.verify(headers, body)
    with pytest.raises(Unauthorized, match="X-MLflow-Signature"):
        verifier.verify({k: v for k, v in headers.items() if k != "x-mlflow-signature"}, body)
    stale = str(int(now) - 301)
    with pytest.raises(Forbidden, match="tolerance"):
        verifier.verify(signed("d-2", stale, body), body)
    with pytest.raises(Forbidden, match="does not match"):
        verifier.verify({**headers, "x-mlflow-delivery-id": "d-3"}, body)


def test_a_replay_is_rejected_by_every_worker_sharing_the_database(tmp_path: Path) -> None:
    """Two uvicorn workers are two verifiers; the delivery log in the application database
    makes the second reject what the first accepted."""
    now = 1_700_000_000.0
    url = f"sqlite:///{tmp_path / 'app.db'}"
    first = WebhookVerifier("s3cret", SqlDeliveryLog(url), clock=lambda: now)
    second = WebhookVerifier("s3cret", SqlDeliveryLog(url), clock=lambda: now)
    body = b'{"entity": "model_version_alias", "action": "updated"}'
    headers = signed("shared-1", str(int(now)), body)
    first.verify(headers, body)
    with pytest.raises(Forbidden, match="already received"):
        second.verify(headers, body)
    # Past the window the id is forgotten (the timestamp check refuses such a replay anyway).
    assert SqlDeliveryLog(url).first_time("shared-1", now + 601, now + 1201)

"""The plain-Python one-row path of the linear predictor (`serving.linear_row`) answers as the
fitted pipeline's own predict_proba, and every row or model it does not cover goes the numpy
way."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression

from lifecycle.core.config import load_datasets, load_training
from lifecycle.core.schema import FeatureSchema
from lifecycle.core.settings import PROJECT_ROOT
from serving import predictors
from serving.api import scoring
from serving.linear_row import LinearRow, Scaling
from serving.runtime import ModelTarget, VersionRef
from tests.support.fixed_model import load_iris
from training import data as data_mod
from training.pipeline import build_pipeline

TOLERANCE = 1e-12


def _fitted(dataset: str, estimator: str) -> tuple[Any, FeatureSchema, pd.DataFrame]:
    conf = PROJECT_ROOT / "conf"
    data = data_mod.load(dataset, data_mod.resolve_config(dataset, load_datasets(conf)))
    params = load_training(conf).estimators[estimator].params
    pipeline = build_pipeline(data.schema, estimator, params, 42).fit(data.X, data.y)
    return pipeline, data.schema, data.X


def _rows(X: pd.DataFrame) -> np.ndarray:
    """The training rows, then rows with one feature pushed far out (up to overflow)."""
    matrix = X.to_numpy(dtype=np.float64)
    rng = np.random.default_rng(7)
    extreme = []
    for size in (1e2, 1e4, 1e6, 1e10, 1e100, 1e300, 1.7e308):
        for _ in range(10):
            row = matrix[rng.integers(len(matrix))].copy()
            row[rng.integers(matrix.shape[1])] = size * rng.choice([-1.0, 1.0])
            extreme.append(row)
    top = matrix.max(axis=0)
    extreme += [np.zeros(matrix.shape[1]), np.full(matrix.shape[1], 1e-300), top * 50, -top * 50]
    return np.vstack([matrix, np.array(extreme)])


def _reference(pipeline: Any, schema: FeatureSchema, row: np.ndarray) -> np.ndarray:
    """The pipeline's own probabilities, as the served DataFrame path computes them."""
    with np.errstate(all="ignore"), sklearn.config_context(assume_finite=True):
        return np.asarray(
            pipeline.predict_proba(pd.DataFrame([row], columns=schema.names))[0], dtype=float
        )


@pytest.mark.parametrize("dataset", ["iris", "wine", "breast_cancer"])
def test_one_row_matches_predict_proba_including_extreme_rows(dataset: str) -> None:
    pipeline, schema, X = _fitted(dataset, "logistic_regression")
    linear = predictors.sklearn_candidates(pipeline, schema)[0]
    assert linear.path == "linear" and linear.one_row is not None
    numpy_only = dataclasses.replace(linear, one_row=None)
    answered = 0
    for row in _rows(X):
        want = _reference(pipeline, schema, row)
        quick = linear.one_row(row.tolist())
        if not np.isfinite(want).all():
            # The model overflows: the row must go to numpy, which refuses it downstream.
            assert quick is None
        if quick is None:
            with np.errstate(all="ignore"):
                labels, probs = linear.predict(row[None, :])
                reference = numpy_only.predict(row[None, :])
            assert labels.tolist() == reference[0].tolist()
            assert np.array_equal(probs, reference[1], equal_nan=True)  # type: ignore[arg-type]
            continue
        answered += 1
        index, values = quick
        assert max(abs(a - b) for a, b in zip(values, want, strict=True)) <= TOLERANCE
        assert index == int(np.argmax(want))
        labels, probs = linear.predict(row[None, :])
        assert labels.dtype == object and labels.tolist() == [pipeline.classes_[index].item()]
        assert probs is not None and probs.tolist() == [values]
    assert answered >= len(X)  # every ordinary row went the plain-Python way


def test_one_row_imputes_missing_values_like_the_pipeline() -> None:
    pipeline, schema, X = _fitted("iris", "logistic_regression")
    linear = predictors.sklearn_candidates(pipeline, schema)[0]
    assert linear.one_row is not None
    row = X.to_numpy(dtype=np.float64)[60].copy()
    for missing in ([0], [1, 3], [0, 1, 2, 3]):
        holed = row.copy()
        holed[missing] = np.nan
        quick = linear.one_row(holed.tolist())
        assert quick is not None
        want = _reference(pipeline, schema, holed)
        assert max(abs(a - b) for a, b in zip(quick[1], want, strict=True)) <= TOLERANCE


def test_batches_and_other_estimators_keep_the_numpy_paths() -> None:
    pipeline, schema, X = _fitted("iris", "logistic_regression")
    linear = predictors.sklearn_candidates(pipeline, schema)[0]
    batch = X.to_numpy(dtype=np.float64)[:5]
    labels, probs = linear.predict(batch)
    assert probs is not None
    assert np.allclose(probs, pipeline.predict_proba(X.iloc[:5]))
    assert labels.tolist() == pipeline.predict(X.iloc[:5]).tolist()
    forest, forest_schema, _ = _fitted("iris", "random_forest")
    assert all(c.one_row is None for c in predictors.sklearn_candidates(forest, forest_schema))


class _OneVsRest(LogisticRegression):
    """Probabilities normalised one-vs-rest (what `multi_class="ovr"` gave), not softmax."""

    def predict_proba(self, X: Any) -> Any:
        return self._predict_proba_lr(X)


def test_a_model_whose_probabilities_differ_gets_no_one_row_path() -> None:
    pipeline, schema, X = _fitted("iris", "logistic_regression")
    odd = sklearn.base.clone(pipeline).set_params(model=_OneVsRest()).fit(X, pipeline.predict(X))
    candidates = predictors.sklearn_candidates(odd, schema)
    assert candidates[0].path == "linear"
    assert candidates[0].one_row is None


def test_linear_row_declines_what_it_cannot_compute_exactly() -> None:
    binary = LinearRow((0,), None, (), ((1.0,),), (0.0,))
    assert binary([800.0]) == (1, [0.0, 1.0])
    assert binary([-800.0]) is None  # exp(800) overflows in Python, not in numpy
    three = LinearRow(
        (0, 1), None, (Scaling(None, (1.0, 1.0)),), ((1.0, 0.0), (0.0, 1.0)), (0.0, 0.0)
    )
    assert three([1e308, -1e308]) is not None
    assert three([math.inf, 0.0]) is None
    assert three([math.nan, 0.0]) is None  # no imputer: NaN is not a number to score
    filled = LinearRow((0, 1), (2.0, 0.0), (), ((1.0, 0.0), (0.0, 1.0)), (0.0, 0.0))
    assert filled([math.nan, 2.0]) == three([2.0, 2.0])


@pytest.mark.parametrize("predictions", [[0], [2], [-3], [True], ["setosa"], [1.5], [0, 1], []])
def test_invocations_answers_render_as_json_response_does(predictions: list[Any]) -> None:
    assert scoring.render_predictions(predictions) == scoring.render({"predictions": predictions})


def test_model_headers_follow_the_model_snapshot() -> None:
    target = ModelTarget("iris-classifier", stage="Production")
    seven = load_iris(VersionRef("iris-classifier", "7", "run-7", "Production"), target)
    eight = dataclasses.replace(seven, version="8", run_id="run-8")
    assert (b"x-model-version", b"7") in seven.raw_headers
    assert seven.raw_headers is seven.raw_headers
    # A snapshot made from another (a swap) encodes its own, never the first one's.
    assert (b"x-model-version", b"8") in eight.raw_headers
    assert (b"x-model-run-id", b"run-8") in eight.raw_headers
    assert (b"x-model-version", b"7") in seven.raw_headers
    assert dict(eight.header_items)["X-Model-Version"] == "8"

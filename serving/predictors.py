"""Predictors: a loaded model behind one call, `predict(X)` on a matrix in schema order.

The scikit-learn flavour is called natively. Pipelines here were fitted on DataFrames, and
going through pandas on every request costs many times the model itself. So besides the
DataFrame path (the model as fitted) two numpy paths are built: `linear` lowers an
impute → scale → LogisticRegression pipeline to one product and a softmax, and `compiled`
applies each fitted ColumnTransformer branch to its column positions, on a copy without the
fitted feature names (so scikit-learn does not warn "X does not have valid feature names" on
every call). The holder uses the fastest path that answers exactly like the DataFrame path on
the model's input example. A single row on the `linear` path skips numpy altogether
(`serving.linear_row`), when that answers like the model's own predict_proba. Other flavours
go through pyfunc.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from lifecycle.core.schema import FeatureSchema
from serving.linear_row import LinearRow, Scaling

Output = tuple[np.ndarray, np.ndarray | None]
OneRow = Callable[[list[Any]], tuple[int, list[float]] | None]
# How far the one-row path may be from the model's own predict_proba at load time; beyond it
# (a scikit-learn whose LogisticRegression computes differently) the path is not used.
ONE_ROW_TOLERANCE = 1e-12


class Predictor(Protocol):
    """Scores a matrix whose columns follow the schema's feature order."""

    @property
    def path(self) -> str: ...

    def predict(self, X: np.ndarray) -> Output:
        """Predicted classes and, when the model has them, class probabilities."""
        ...

    @property
    def classes(self) -> tuple[Any, ...]: ...


def frame(X: np.ndarray, schema: FeatureSchema) -> pd.DataFrame:
    return schema.coerce(pd.DataFrame(X, columns=schema.names))


@dataclass(frozen=True)
class SklearnPredictor:
    """A fitted estimator called on numpy (`native`/`compiled`) or on a DataFrame.

    `one_row`, when set, answers a single row in plain Python (`serving.linear_row`); a row it
    declines goes the numpy way like any other.
    """

    path: str
    call: Callable[[np.ndarray], Any]
    proba: Callable[[np.ndarray], np.ndarray] | None
    estimator_classes: tuple[Any, ...]
    sklearn_calls: bool = True
    one_row: OneRow | None = None

    @property
    def classes(self) -> tuple[Any, ...]:
        return self.estimator_classes

    def predict(self, X: np.ndarray) -> Output:
        if self.one_row is not None and len(X) == 1:
            answer = self.one_row(X.tolist()[0])
            if answer is not None:
                index, probs = answer
                label = np.array([self.estimator_classes[index]], dtype=object)
                return label, np.array([probs], dtype=np.float64)
        if not self.sklearn_calls:
            return self._predict(X)
        # Inputs are validated before they get here (finite, or NaN only for a model that
        # imputes it), so the per-call finiteness checks are waste.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return self._predict(X)

    def _predict(self, X: np.ndarray) -> Output:
        if self.proba is not None:
            probs = np.asarray(self.proba(X))
            idx = probs.argmax(axis=1)
            return np.asarray(self.estimator_classes, dtype=object)[idx], probs
        return np.asarray(self.call(X)), None


@dataclass(frozen=True)
class PyfuncPredictor:
    path: str
    model: Any
    schema: FeatureSchema

    @property
    def classes(self) -> tuple[Any, ...]:
        return self.schema.classes

    def predict(self, X: np.ndarray) -> Output:
        out = self.model.predict(frame(X, self.schema))
        if isinstance(out, pd.DataFrame):
            out = out.iloc[:, 0]
        return np.asarray(out).reshape(-1), None


def sklearn_candidates(model: Any, schema: FeatureSchema) -> list[SklearnPredictor]:
    """Fastest first; the DataFrame path (the model as fitted) is always last."""
    classes = tuple(_plain(c) for c in getattr(model, "classes_", schema.classes))
    has_proba = hasattr(model, "predict_proba")
    out: list[SklearnPredictor] = []
    try:
        parts = _linear_parts(model, schema) if has_proba else None
        linear = _linear(parts) if parts is not None else None
        one_row = _one_row(parts, model, schema) if parts is not None else None
    except (AttributeError, ValueError, IndexError):  # an unusual fit: keep the other paths
        linear, one_row = None, None
    if linear is not None:
        labels = np.asarray(classes, dtype=object)
        out.append(
            SklearnPredictor(
                "linear",
                lambda X: labels[linear(X).argmax(axis=1)],
                linear,
                classes,
                False,
                one_row,
            )
        )
    compiled = _compile_pipeline(model, schema)
    if compiled is not None:
        head, rest = compiled
        out.append(
            SklearnPredictor(
                "compiled",
                lambda X: rest.predict(head(X)),
                (lambda X: rest.predict_proba(head(X))) if has_proba else None,
                classes,
            )
        )
    else:
        bare = _without_feature_names(model)
        out.append(
            SklearnPredictor(
                "native", bare.predict, bare.predict_proba if has_proba else None, classes
            )
        )
    out.append(
        SklearnPredictor(
            "dataframe",
            lambda X: model.predict(frame(X, schema)),
            (lambda X: model.predict_proba(frame(X, schema))) if has_proba else None,
            classes,
        )
    )
    return out


@dataclass(frozen=True)
class _LinearParts:
    """`Pipeline(ColumnTransformer([numeric: impute → scale]), LogisticRegression)`, taken
    apart: the columns it reads, the imputer's NaN fill, the scalers in order, the model."""

    positions: list[int]
    fill: np.ndarray | None
    scalers: list[StandardScaler]
    estimator: LogisticRegression


def _linear_parts(model: Any, schema: FeatureSchema) -> _LinearParts | None:
    if not isinstance(model, Pipeline) or len(model.steps) != 2:
        return None
    ct, estimator = model.steps[0][1], model.steps[1][1]
    if not isinstance(ct, ColumnTransformer) or not isinstance(estimator, LogisticRegression):
        return None
    branches = [(t, c) for _n, t, c in ct.transformers_ if t != "drop" and len(c)]
    if ct.remainder != "drop" or len(branches) != 1:
        return None
    branch, columns = branches[0]
    if not all(c in schema.numeric for c in columns):
        return None
    steps = [s for _n, s in branch.steps] if isinstance(branch, Pipeline) else [branch]
    fill: np.ndarray | None = None
    if steps and isinstance(steps[0], SimpleImputer):
        fill = _nan_fill(steps[0])
        if fill is None:
            return None
        steps = steps[1:]
    if not all(isinstance(step, StandardScaler) for step in steps):
        return None
    positions = [schema.names.index(c) for c in columns]
    return _LinearParts(positions, fill, steps, estimator)


def _linear(parts: _LinearParts) -> Callable[[np.ndarray], np.ndarray]:
    """The pipeline of `parts` in numpy.

    Scaling folds into the coefficients: one matrix product and a softmax, tens of
    microseconds instead of hundreds. A NaN imputer in front cannot fold (it is not linear),
    so its fitted fill values replace NaN cells first; a finite row skips that after one
    `isnan` check. Infinity never gets here (the validator refuses it).
    """
    weights = np.asarray(parts.estimator.coef_, dtype=np.float64)
    bias = np.asarray(parts.estimator.intercept_, dtype=np.float64).copy()
    # Fold the steps from last to first: w·((x - m) / s) + b = (w / s)·x + (b - (w / s)·m).
    for step in reversed(parts.scalers):
        scale = step.scale_ if step.with_std else np.ones(weights.shape[1])
        mean = step.mean_ if step.with_mean else np.zeros(weights.shape[1])
        weights = weights / scale
        bias = bias - weights @ mean
    positions, fill = parts.positions, parts.fill
    w_t = np.ascontiguousarray(weights.T)

    def proba(X: np.ndarray) -> np.ndarray:
        # Broadcast-and-sum rather than `@`: BLAS releases the GIL, and on a busy server
        # getting it back can cost a whole switch interval (5 ms) behind another thread.
        x = X[:, positions].astype(np.float64, copy=False)
        if fill is not None:
            missing = np.isnan(x)
            if missing.any():
                x = np.where(missing, fill, x)
        z = (x[:, :, None] * w_t[None, :, :]).sum(axis=1) + bias
        if z.shape[1] == 1:
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p, p])
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    return proba


def _one_row(parts: _LinearParts, model: Any, schema: FeatureSchema) -> LinearRow | None:
    """The plain-Python one-row path of `parts`, if it answers like the model's own
    predict_proba on a few rows around the training data's centre; else None."""
    estimator = parts.estimator
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    if coef.ndim != 2 or len(estimator.classes_) != max(coef.shape[0], 2):
        return None
    scalings = tuple(
        Scaling(
            _floats(step.mean_) if step.with_mean else None,
            _floats(step.scale_) if step.with_std else None,
        )
        for step in parts.scalers
    )
    row = LinearRow(
        tuple(parts.positions),
        None if parts.fill is None else _floats(parts.fill),
        scalings,
        tuple(_floats(w) for w in coef),
        _floats(np.asarray(estimator.intercept_, dtype=np.float64)),
    )
    return row if _one_row_agrees(row, model, schema, parts) else None


def _one_row_agrees(row: LinearRow, model: Any, schema: FeatureSchema, parts: _LinearParts) -> bool:
    """Compare with the pipeline itself (DataFrame in, as fitted) on rows at the first
    scaler's mean and one and three standard deviations either side of it."""
    first = parts.scalers[0] if parts.scalers else None
    centre = (
        first.mean_ if first is not None and first.with_mean else np.zeros(len(parts.positions))
    )
    spread = first.scale_ if first is not None and first.with_std else np.ones(len(parts.positions))
    probes: list[list[Any]] = []
    for k in (0.0, 1.0, -1.0, 3.0, -3.0):
        values = [0.0 if f.kind == "numeric" else None for f in schema.features]
        for j, position in enumerate(parts.positions):
            # Alternate the sign per column, so the probes are not all on one diagonal.
            values[position] = float(centre[j] + (k if j % 2 else -k) * spread[j])
        probes.append(values)
    X = np.array(probes, dtype=np.float64 if not schema.categorical else object)
    try:
        expected = np.asarray(model.predict_proba(frame(X, schema)), dtype=np.float64)
    except Exception:  # the pipeline refuses the probes: do not guess
        return False
    for values, want in zip(probes, expected.tolist(), strict=True):
        got = row(values)
        if got is None or len(got[1]) != len(want):
            return False
        if any(abs(a - b) > ONE_ROW_TOLERANCE for a, b in zip(got[1], want, strict=True)):
            return False
    return True


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))


def _nan_fill(imputer: SimpleImputer) -> np.ndarray | None:
    """The per-column values a NaN imputer writes, or None when it does more than that."""
    if not _is_nan(imputer.missing_values) or imputer.add_indicator:
        return None
    fill = np.asarray(imputer.statistics_, dtype=np.float64)
    # A column all-NaN at fit time has no statistic and is dropped from the output.
    return None if np.isnan(fill).any() else fill


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def same_output(a: Output, b: Output) -> bool:
    if list(map(_plain, a[0])) != list(map(_plain, b[0])):
        return False
    if (a[1] is None) != (b[1] is None):
        return False
    if a[1] is None or b[1] is None:
        return a[1] is None and b[1] is None
    return bool(np.allclose(a[1], b[1], rtol=1e-6, atol=1e-9))


def _compile_pipeline(
    model: Any, schema: FeatureSchema
) -> tuple[Callable[[np.ndarray], np.ndarray], Any] | None:
    if not isinstance(model, Pipeline) or len(model.steps) < 2:
        return None
    ct = model.steps[0][1]
    if not isinstance(ct, ColumnTransformer) or ct.remainder != "drop":
        return None
    positions = {name: i for i, name in enumerate(schema.names)}
    parts: list[tuple[Any, list[int], bool]] = []
    for _name, transformer, columns in ct.transformers_:
        if transformer == "drop" or len(columns) == 0:
            continue
        if not all(isinstance(c, str) and c in positions for c in columns):
            return None
        numeric = all(c in schema.numeric for c in columns)
        parts.append(
            (_without_feature_names(transformer), [positions[c] for c in columns], numeric)
        )
    if not parts:
        return None
    rest = _without_feature_names(model[1:])

    def head(X: np.ndarray) -> np.ndarray:
        blocks = []
        for transformer, cols, numeric in parts:
            sub = X[:, cols]
            if numeric and sub.dtype == object:
                sub = sub.astype(np.float64)
            block = sub if transformer == "passthrough" else transformer.transform(sub)
            blocks.append(block.toarray() if hasattr(block, "toarray") else np.asarray(block))
        return blocks[0] if len(blocks) == 1 else np.hstack(blocks)

    return head, rest


def _without_feature_names(estimator: Any) -> Any:
    """A deep copy that no longer remembers the DataFrame columns it was fitted on."""
    clone = copy.deepcopy(estimator)
    _strip(clone, set())
    return clone


def _strip(obj: Any, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, BaseEstimator):
        if "feature_names_in_" in vars(obj):
            del obj.feature_names_in_
        for value in vars(obj).values():
            _strip(value, seen)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _strip(value, seen)
    elif isinstance(obj, dict):
        for value in obj.values():
            _strip(value, seen)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value

"""The scikit-learn pipeline: preprocessing from the feature schema, estimator from config."""

from __future__ import annotations

from typing import Any

from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from lifecycle.core.errors import ConfigError
from lifecycle.core.schema import FeatureSchema

ESTIMATORS: dict[str, type[ClassifierMixin]] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "gradient_boosting": GradientBoostingClassifier,
}


def build_pipeline(
    schema: FeatureSchema, estimator: str, params: dict[str, Any], seed: int
) -> Pipeline:
    cls = ESTIMATORS.get(estimator)
    if cls is None:
        raise ConfigError(f"unknown estimator '{estimator}'; known: {', '.join(ESTIMATORS)}")
    kwargs = dict(params)
    if "random_state" in cls().get_params():
        kwargs.setdefault("random_state", seed)
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"estimator {estimator}: bad parameter: {exc}") from exc
    transformers: list[tuple[str, Any, list[str]]] = []
    if schema.numeric:
        numeric = Pipeline(
            [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        )
        transformers.append(("numeric", numeric, schema.numeric))
    if schema.categorical:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent", missing_values=None)),
                ("onehot", OneHotEncoder(handle_unknown="ignore")),
            ]
        )
        transformers.append(("categorical", categorical, schema.categorical))
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", model)])


def imputes_missing(model: Any, schema: FeatureSchema) -> bool:
    """Whether every numeric feature goes through a NaN imputer before anything else.

    Recorded with the model (`FeatureSchema.accepts_missing`) so serving knows, without
    inspecting the estimator, whether a null numeric value can be scored.
    """
    if not isinstance(model, Pipeline) or not isinstance(model.steps[0][1], ColumnTransformer):
        return False
    covered: set[str] = set()
    for _name, branch, columns in model.steps[0][1].transformers:
        first = branch.steps[0][1] if isinstance(branch, Pipeline) else branch
        # NaN != NaN: true only for an imputer of NaN (the categorical one imputes None).
        if isinstance(first, SimpleImputer) and first.missing_values != first.missing_values:
            covered.update(columns)
    return all(name in covered for name in schema.numeric)

"""Dataset loading and the feature schema: what the pipeline and the signature are built from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.types import DataType

from lifecycle.core.config import DatasetConfig, load_datasets, load_training
from lifecycle.core.errors import ConfigError, DataError
from lifecycle.core.schema import FeatureSchema
from lifecycle.core.settings import PROJECT_ROOT
from training import data
from training.pipeline import build_pipeline

CONF = PROJECT_ROOT / "conf"


def mixed_csv(path: Path, rows: int = 120) -> Path:
    rng = np.random.default_rng(0)
    plan = rng.choice(["basic", "pro", "team"], size=rows)
    usage = rng.normal(10, 3, size=rows)
    usage[::7] = np.nan
    churned = ((plan == "basic") & (np.nan_to_num(usage, nan=10) < 11)).astype(int)
    pd.DataFrame({"plan": plan, "usage": usage, "churned": churned}).to_csv(path, index=False)
    return path


def test_configured_datasets_load_with_class_labels() -> None:
    known = load_datasets(CONF)
    iris = data.load("iris", data.resolve_config("iris", known))
    assert iris.schema.names[:1] == ["sepal length (cm)"]
    assert iris.schema.class_labels == ("setosa", "versicolor", "virginica")
    assert iris.schema.classes == (0, 1, 2)
    wine = data.load("wine", data.resolve_config("wine", known))
    assert len(wine.schema.features) == 13


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'nope'; known: breast_cancer, iris"):
        data.resolve_config("nope", load_datasets(CONF))


def test_csv_with_categorical_and_missing_values(tmp_path: Path) -> None:
    path = mixed_csv(tmp_path / "churn.csv")
    ds = data.load("churn", DatasetConfig(source="file", path=str(path), target="churned"))
    assert ds.schema.categorical == ["plan"]
    assert ds.schema.numeric == ["usage"]
    sig = ds.schema.signature()
    assert sig.inputs is not None
    types = {c.name: c.type for c in sig.inputs.inputs}
    assert types == {"plan": DataType.string, "usage": DataType.double}
    split = data.split(ds, 0.25, 42)
    pipe = build_pipeline(ds.schema, "random_forest", {"n_estimators": 10}, 42)
    pipe.fit(ds.schema.coerce(split.train), split.train["churned"])
    scored = pipe.predict(ds.schema.coerce(split.test))
    assert len(scored) == len(split.test)
    assert ds.schema.coerce(split.test)["usage"].isna().any() or split.train["usage"].isna().any()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "file is empty"),
        ("a,b\n", "file has no rows"),
        ("a,b\n1,2\n3,4\n", "target column 'churned' not in"),
        ("a,churned\n1,1\n2,1\n3,1\n", "has 1 class"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        data.load("bad", DatasetConfig(source="file", path=str(path), target="churned"))


def test_path_dataset_needs_a_target() -> None:
    with pytest.raises(DataError, match="give the target column"):
        data.resolve_config("x.csv", {})


def test_missing_file() -> None:
    with pytest.raises(DataError, match="file not found"):
        data.load("x", DatasetConfig(source="file", path="/nonexistent.csv", target="y"))


def test_schema_round_trips_through_model_metadata() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3, 4], "c": ["x", "y", None, "x"], "t": ["n", "y", "n", "y"]})
    schema = FeatureSchema.from_frame(frame, "t")
    assert FeatureSchema.from_metadata(schema.to_metadata()) == schema
    coerced = schema.coerce(frame)
    assert coerced["a"].dtype == np.float64
    assert coerced["c"].tolist() == ["x", "y", None, "x"]


def test_training_config_rejects_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "training.yaml").write_text("estimators: {}\nbogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_training(tmp_path)


def test_unknown_estimator() -> None:
    schema = FeatureSchema.from_frame(pd.DataFrame({"a": [1.0, 2.0], "t": [0, 1]}), "t")
    with pytest.raises(ConfigError, match="unknown estimator 'svm'"):
        build_pipeline(schema, "svm", {}, 0)

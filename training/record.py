"""What every training run records in MLflow: data, metrics, figures and the model."""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.pandas_dataset import from_pandas
from mlflow.models.model import ModelInfo

from lifecycle.core.schema import FeatureSchema
from training import metrics
from training.data import Dataset, Split
from training.pipeline import imputes_missing

DATA_DIR = "data"
# The held-out split is stored with each run so that any later scoring (evaluate, promotion
# gates, drift reports) uses exactly the rows this model never saw.
TRAIN_FILE = "train.parquet"
EVAL_FILE = "eval.parquet"
MODEL_NAME = "model"


def data_artifact(run_id: str, filename: str) -> str:
    return f"runs:/{run_id}/{DATA_DIR}/{filename}"


def log_data(data: Dataset, split: Split) -> None:
    run_id = _run_id()
    with tempfile.TemporaryDirectory() as tmp:
        split.train.to_parquet(Path(tmp) / TRAIN_FILE, index=False)
        split.test.to_parquet(Path(tmp) / EVAL_FILE, index=False)
        mlflow.log_artifacts(tmp, DATA_DIR)
    # No built-in dataset source resolves run artifacts, so the source names the artifact
    # (where the rows are) and the origin (where they came from) as tags.
    for frame, filename, context in (
        (split.train, TRAIN_FILE, "training"),
        (split.test, EVAL_FILE, "evaluation"),
    ):
        source = CodeDatasetSource(
            {"artifact_uri": data_artifact(run_id, filename), "origin": data.source}
        )
        with _known_warnings_silenced():
            dataset = from_pandas(
                frame, source=source, targets=data.schema.target, name=f"{data.name}-{context}"
            )
            mlflow.log_input(dataset, context=context)


def log_evaluation(model: Any, schema: FeatureSchema, frame: pd.DataFrame) -> dict[str, float]:
    X, y = schema.coerce(frame), frame[schema.target]
    scores = metrics.score(model, X, y)
    mlflow.log_metrics(scores)
    fig = metrics.confusion_figure(model, X, y, schema)
    try:
        mlflow.log_figure(fig, "confusion_matrix.png")
    finally:
        metrics.close(fig)
    return scores


def log_model(
    model: Any, schema: FeatureSchema, train: pd.DataFrame, registered_name: str | None
) -> ModelInfo:
    example = schema.coerce(train.head(5))
    with _known_warnings_silenced():
        return mlflow.sklearn.log_model(
            model,
            name=MODEL_NAME,
            signature=schema.signature(),
            input_example=example,
            metadata=replace(schema, accepts_missing=imputes_missing(model, schema)).to_metadata(),
            registered_model_name=registered_name,
            # skops (MLflow's default) rejects numpy dtypes held by the fitted preprocessing.
            serialization_format="cloudpickle",
        )


@contextmanager
def _known_warnings_silenced() -> Iterator[None]:
    """Warnings every training run would print about choices made on purpose: integer class
    labels in the dataset's and the output's inferred schema (a label is never missing), and
    cloudpickle (skops refuses the fitted preprocessing, see log_model)."""
    sklearn_log = logging.getLogger("mlflow.sklearn")
    level = sklearn_log.level
    sklearn_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            yield
    finally:
        sklearn_log.setLevel(level)


def _run_id() -> str:
    run = mlflow.active_run()
    if run is None:  # pragma: no cover - callers always hold a run
        raise RuntimeError("no active MLflow run")
    return run.info.run_id

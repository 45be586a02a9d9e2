"""`evaluate`: score a registered version or a run's model on held-out data.

The held-out rows are the ones stored with the training run (see `record.log_data`), so a
model is always judged on data it never saw, and two versions can be compared on the same rows.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lifecycle.core import mlflow_gateway
from lifecycle.core.errors import DataError, NotFound
from lifecycle.core.schema import FeatureSchema
from lifecycle.core.settings import Settings
from training import metrics, record


@dataclass(frozen=True)
class EvaluateRequest:
    model_name: str | None = None
    version: str | None = None
    run_id: str | None = None
    data_run_id: str | None = None


@dataclass(frozen=True)
class EvaluateResult:
    run_id: str
    model_uri: str
    metrics: dict[str, float]


def load_eval_frame(run_id: str) -> pd.DataFrame:
    uri = record.data_artifact(run_id, record.EVAL_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise NotFound(f"run {run_id} has no held-out data ({uri})") from exc
        return pd.read_parquet(Path(path))


def load_scoring_model(model_uri: str) -> tuple[Any, FeatureSchema]:
    try:
        model = mlflow.sklearn.load_model(model_uri)
        schema = FeatureSchema.from_metadata(mlflow_gateway.model_metadata(model_uri))
    except MlflowException as exc:
        raise NotFound(f"cannot load model {model_uri}: {exc.message}") from exc
    return model, schema


def score_model(model_uri: str, frame: pd.DataFrame) -> dict[str, float]:
    model, schema = load_scoring_model(model_uri)
    missing = [c for c in (*schema.names, schema.target) if c not in frame.columns]
    if missing:
        raise DataError(f"held-out data lacks columns needed by {model_uri}: {missing}")
    return metrics.score(model, schema.coerce(frame), frame[schema.target])


def resolve_model(client: MlflowClient, request: EvaluateRequest) -> tuple[str, str]:
    """(model URI, id of the run whose held-out data is used)."""
    if request.model_name and request.version:
        mv = mlflow_gateway.get_version(client, request.model_name, request.version)
        if not mv.run_id:
            raise NotFound(f"model {request.model_name} v{request.version} has no source run")
        return f"models:/{request.model_name}/{request.version}", mv.run_id
    if request.run_id:
        mlflow_gateway.get_run(client, request.run_id)
        return f"runs:/{request.run_id}/{record.MODEL_NAME}", request.run_id
    raise DataError("evaluate needs --model NAME --version N, or --run-id")


def evaluate(settings: Settings, request: EvaluateRequest) -> EvaluateResult:
    client = mlflow_gateway.connect(settings)
    model_uri, source_run = resolve_model(client, request)
    frame = load_eval_frame(request.data_run_id or source_run)
    scores = score_model(model_uri, frame)
    with mlflow_gateway.start_run(settings, "evaluate") as run:
        mlflow.set_tags(
            {
                "lifecycle.kind": "evaluate",
                "lifecycle.model_uri": model_uri,
                "lifecycle.data_run_id": request.data_run_id or source_run,
            }
        )
        mlflow.log_metrics(scores)
    return EvaluateResult(run.info.run_id, model_uri, scores)

"""`train`: fit the configured pipeline and record everything in MLflow."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import mlflow
import yaml

from lifecycle.core import mlflow_gateway
from lifecycle.core.config import TrainingConfig, load_datasets, load_training
from lifecycle.core.errors import ConfigError
from lifecycle.core.settings import Settings
from training import data as data_mod
from training import record
from training.pipeline import build_pipeline


@dataclass(frozen=True)
class TrainRequest:
    dataset: str
    estimator: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    target: str | None = None
    class_labels: dict[str, str] | None = None
    register: bool = False
    model_name: str | None = None
    run_name: str | None = None


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    registered_name: str | None
    version: str | None


@dataclass(frozen=True)
class Prepared:
    """Dataset, split and config: loaded and checked before any run is opened."""

    data: data_mod.Dataset
    split: data_mod.Split
    config: TrainingConfig
    estimator: str


def prepare(
    settings: Settings,
    dataset: str,
    estimator: str | None,
    target: str | None,
    class_labels: dict[str, str] | None = None,
) -> Prepared:
    config = load_training(settings.conf_dir)
    known = load_datasets(settings.conf_dir)
    cfg = data_mod.resolve_config(dataset, known, target, class_labels)
    data = data_mod.load(dataset, cfg)
    name = estimator or config.estimator
    if name not in config.estimators:
        raise ConfigError(
            f"unknown estimator '{name}'; configured: {', '.join(sorted(config.estimators))}"
        )
    return Prepared(data, data_mod.split(data, config.test_size, settings.seed), config, name)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (from the CLI or MLproject) → typed estimator parameters."""
    out: dict[str, Any] = {}
    for pair in pairs:
        for item in filter(None, (p.strip() for p in pair.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"params: expected KEY=VALUE, got '{item}'")
            out[key.strip()] = yaml.safe_load(value)
    return out


def parse_class_labels(text: str | None) -> dict[str, str] | None:
    """`--class-labels` (JSON object, class value → label; empty: none)."""
    if not text or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--class-labels: expected a JSON object, got '{text}' ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--class-labels: expected a JSON object of labels, got '{text}'")
    return {str(k): str(v) for k, v in value.items()} or None


def registered_name(settings: Settings, request: TrainRequest) -> str:
    return request.model_name or settings.registered_model_name(request.dataset)


def train(settings: Settings, request: TrainRequest) -> TrainResult:
    prep = prepare(
        settings, request.dataset, request.estimator, request.target, request.class_labels
    )
    params = {**prep.config.estimators[prep.estimator].params, **request.params}
    pipeline = build_pipeline(prep.data.schema, prep.estimator, params, settings.seed)
    mlflow_gateway.connect(settings)
    name = registered_name(settings, request) if request.register else None
    with mlflow_gateway.start_run(settings, request.run_name) as run:
        log_common(prep, settings)
        mlflow.log_params({f"model.{k}": v for k, v in params.items()})
        train_frame = prep.split.train
        pipeline.fit(prep.data.schema.coerce(train_frame), train_frame[prep.data.schema.target])
        scores = record.log_evaluation(pipeline, prep.data.schema, prep.split.test)
        record.log_data(prep.data, prep.split)
        info = record.log_model(pipeline, prep.data.schema, train_frame, name)
    version = info.registered_model_version
    return TrainResult(
        run.info.run_id,
        info.model_uri,
        scores,
        name,
        str(version) if version is not None else None,
    )


def log_common(prep: Prepared, settings: Settings) -> None:
    # Namespaced so they never collide with the parameters `mlflow run` logs for the entry point.
    mlflow.log_params(
        {
            "data.name": prep.data.name,
            "data.target": prep.data.schema.target,
            "data.n_train": len(prep.split.train),
            "data.n_eval": len(prep.split.test),
            "split.seed": settings.seed,
            "split.test_size": prep.config.test_size,
            "model.estimator": prep.estimator,
        }
    )
    mlflow.set_tags({"lifecycle.dataset": prep.data.name, "lifecycle.source": prep.data.source})

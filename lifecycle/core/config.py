"""Typed views of the YAML files in `conf/`, validated on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lifecycle.core.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetConfig(_Strict):
    source: Literal["sklearn", "file"]
    loader: str | None = None
    path: str | None = None
    target: str | None = None
    categorical: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    # A file's class values → the labels the model answers with ({0: setosa, ...}); keys are
    # matched as text, so YAML numbers and JSON strings both work.
    class_labels: dict[Any, str] = Field(default_factory=dict)


class DatasetsFile(_Strict):
    datasets: dict[str, DatasetConfig]


class ParamSpace(_Strict):
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


class EstimatorConfig(_Strict):
    params: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, ParamSpace] = Field(default_factory=dict)


class TuningConfig(_Strict):
    metric: str = "f1_macro"
    cv_folds: int = Field(5, ge=2)
    pruner: Literal["median", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0)


Stage = Literal["Production", "Staging", "Archived", "None"]


def _default_aliases() -> dict[Stage, str]:
    return {"Production": "production", "Staging": "staging"}


class GatesConfig(_Strict):
    """Promotion gates and the alias kept on each stage (conf/gates.yaml)."""

    metric: str = "f1_macro"
    margin: float = Field(0.0, ge=0)
    min_metric: float | None = None
    aliases: dict[Stage, str] = Field(default_factory=_default_aliases)
    lock_timeout: float = Field(120.0, gt=0)


class TrainingConfig(_Strict):
    test_size: float = Field(0.25, gt=0, lt=1)
    estimator: str = "logistic_regression"
    estimators: dict[str, EstimatorConfig]
    tuning: TuningConfig = Field(default_factory=TuningConfig)


class DriftConfig(_Strict):
    """How drift reports decide (conf/drift.yaml); names are Evidently's stat tests."""

    drift_share: float = Field(0.5, gt=0, le=1)
    summary: bool = False
    num_method: str | None = None
    cat_method: str | None = None
    num_threshold: float | None = Field(None, gt=0)
    cat_threshold: float | None = Field(None, gt=0)
    per_feature_method: dict[str, str] = Field(default_factory=dict)
    per_feature_threshold: dict[str, float] = Field(default_factory=dict)


def _load_yaml(path: Path) -> Any:
    try:
        with path.open() as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], path: Path) -> M:
    try:
        return model.model_validate(_load_yaml(path))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from exc


def load_datasets(conf_dir: Path) -> dict[str, DatasetConfig]:
    return _validate(DatasetsFile, conf_dir / "datasets.yaml").datasets


def load_training(conf_dir: Path) -> TrainingConfig:
    return _validate(TrainingConfig, conf_dir / "training.yaml")


def load_gates(conf_dir: Path) -> GatesConfig:
    return _validate(GatesConfig, conf_dir / "gates.yaml")


def load_drift(conf_dir: Path) -> DriftConfig:
    return _validate(DriftConfig, conf_dir / "drift.yaml")


class RetrainConfig(_Strict):
    """When drift_check asks for a retrain, and how the retrain DAG promotes and waits."""

    stage: Literal["Production", "Staging"] = "Production"
    min_accuracy: float = Field(0.8, ge=0, le=1)
    min_labelled: int = Field(30, ge=1)
    serve_timeout: float = Field(120.0, gt=0)
    first_prediction_wait: float = Field(60.0, ge=0)


class BatchConfig(_Strict):
    """How batch_scoring waits for the worker's file tasks."""

    task_timeout: float = Field(600.0, gt=0)
    poll_interval: float = Field(1.0, gt=0)


class PipelinesConfig(_Strict):
    """The Airflow DAGs' tuning (conf/pipelines.yaml)."""

    experiment: str = Field("lifecycle-pipelines", min_length=1)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)


def load_pipelines(conf_dir: Path) -> PipelinesConfig:
    return _validate(PipelinesConfig, conf_dir / "pipelines.yaml")

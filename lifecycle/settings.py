"""Every setting, declared once with its type, default and meaning.

Settings are read once at an entry point (`Settings()`) and passed down; no module reads the
environment on its own. Non-secret tuning (datasets, search spaces, gates) lives in `conf/`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIFECYCLE_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        Path(".lifecycle"),
        description="Embedded mode's home: SQLite stores, artifacts, spool, logs.",
    )
    conf_dir: Path = Field(
        PROJECT_ROOT / "conf", description="Folder of the YAML configuration files."
    )
    tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "LIFECYCLE_TRACKING_URI"),
        description="MLflow tracking server; default: the embedded server on tracking_port.",
    )
    tracking_host: str = Field("127.0.0.1", description="Host `lifecycle tracking` binds.")
    tracking_port: int = Field(5000, description="Port `lifecycle tracking` binds.")
    backend_store_uri: str | None = Field(
        None,
        description="MLflow backend store for `lifecycle tracking` (SQLAlchemy URL, e.g. "
        "postgresql+psycopg2://user@host/db); default: SQLite under data_dir.",
    )
    artifacts_destination: str | None = Field(
        None, description="Where the tracking server keeps artifacts; default: data_dir/artifacts."
    )
    database_url: str | None = Field(
        None,
        description="Application database (prediction store, Optuna studies, locks); "
        "default: SQLite under data_dir.",
    )
    experiment_name: str = Field("lifecycle", description="MLflow experiment for training runs.")
    dataset: str = Field("iris", description="Dataset name from conf/datasets.yaml.")
    model_name: str | None = Field(
        None, description="Registered model name; default: '<dataset>-classifier'."
    )
    seed: int = Field(42, description="Seed for splits, estimators and Optuna samplers.")
    tracking_timeout: float = Field(
        5.0, description="Seconds to wait for the tracking server before giving up."
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token required by admin actions (reload, promote, rollback)."
    )

    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"http://{self.tracking_host}:{self.tracking_port}"

    def resolved_backend_store_uri(self) -> str:
        return self.backend_store_uri or f"sqlite:///{self.resolved_data_dir() / 'mlflow.db'}"

    def resolved_artifacts_destination(self) -> str:
        return self.artifacts_destination or str(self.resolved_data_dir() / "artifacts")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir() / 'lifecycle.db'}"

    def registered_model_name(self, dataset: str | None = None) -> str:
        return self.model_name or f"{dataset or self.dataset}-classifier"

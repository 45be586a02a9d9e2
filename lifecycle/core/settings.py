"""Every setting, declared once with its type, default and meaning.

Settings are read once at an entry point (`Settings()`) and passed down; no module reads the
environment on its own. Non-secret tuning (datasets, search spaces, gates) lives in `conf/`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from lifecycle.core.durations import parse_duration

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIFECYCLE_", extra="ignore", populate_by_name=True
    )

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
    tracking_workers: int = Field(
        2,
        ge=1,
        description="Worker processes of `lifecycle tracking` (MLflow's default, 4, doubles "
        "the start-up time and memory of the embedded stack on a small machine).",
    )
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
    # Prediction store (lifecycle/core/store/).
    prediction_queue_size: int = Field(
        10_000, ge=1, description="Predictions held in memory before submit() spools to disk."
    )
    prediction_batch_size: int = Field(
        500, ge=1, description="Most prediction rows in one multi-row INSERT."
    )
    prediction_flush_interval: float = Field(
        0.2, gt=0, description="Seconds the prediction writer waits for rows before a flush."
    )
    prediction_spool_dir: Path | None = Field(
        None,
        description="Spool for predictions while the database is down; default: data_dir/spool.",
    )
    prediction_spool_max_bytes: int = Field(
        512 * 1024 * 1024,
        ge=0,
        description="Spool size per process beyond which predictions are dropped (and counted).",
    )
    prediction_retention: str | None = Field(
        None,
        description="Keep predictions this long (30d, 12h, 2w); older ones are pruned hourly. "
        "Default: keep everything.",
    )
    prediction_chunks: bool = Field(
        True,
        description="PostgreSQL: store each chunk of a batch file as one row (prediction_chunks) "
        "rather than one row per prediction; false: one row per prediction.",
    )
    # Serving.
    model_uri: str | None = Field(
        None,
        description="What the servers follow: models:/NAME@ALIAS, models:/NAME/STAGE or "
        "models:/NAME/VERSION; default: the registered model at model_stage.",
    )
    model_stage: str = Field("Production", description="Stage served when model_uri is not set.")
    poll_interval: float = Field(
        2.0, gt=0, description="Seconds between registry polls of the served target."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC secret of the MLflow registry webhook (POST /webhooks/mlflow)."
    )
    max_batch_rows: int = Field(
        100_000, ge=1, description="Most rows accepted in one request (413 beyond)."
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes (413)."
    )
    api_host: str = Field("127.0.0.1", description="Host `lifecycle serve` binds.")
    api_port: int = Field(8000, description="Port `lifecycle serve` binds.")
    api_workers: int = Field(1, ge=1, description="uvicorn worker processes of `lifecycle serve`.")
    api_url: str | None = Field(
        None,
        description="URL the UI and pipelines reach the API at; default: http://api_host:api_port.",
    )
    startup_model_timeout: float = Field(
        60.0,
        ge=0,
        description="Seconds an API worker tries to load its model before taking traffic; "
        "after that it starts without one (/ready 503, details.startup says why).",
    )
    shutdown_grace_seconds: float = Field(
        5.0,
        ge=0,
        description="Seconds an API worker keeps serving after SIGTERM with /ready at 503, "
        "so a load balancer stops routing to it before it stops accepting.",
    )

    # Async scoring (serving/worker.py, serving/amqp.py).
    broker_url: str | None = Field(
        None,
        description="Celery broker: amqp://user:pass@host:5672/vhost in production; default: "
        "the embedded SQLite transport sqla+sqlite:///<data_dir>/broker.db (no server).",
    )
    result_backend: str | None = Field(
        None,
        description="Celery result backend (task states for GET /tasks/{id}); default: "
        "db+<database_url>, or db+sqlite:///<data_dir>/results.db in the embedded mode.",
    )
    task_queue: str = Field("lifecycle", description="Celery queue the scoring tasks go to.")
    worker_concurrency: int = Field(
        2,
        ge=1,
        description="File and report tasks one `lifecycle worker` runs at once (threads pool: "
        "8 threads per slot, for one-row tasks waiting on their shared batch).",
    )
    worker_prefetch: int = Field(
        1, ge=1, description="Messages a worker reserves per slot (Celery prefetch multiplier)."
    )
    task_max_retries: int = Field(
        8, ge=0, description="Retries (with exponential backoff) of a task on transient errors."
    )
    task_retry_backoff_max: float = Field(
        30.0, gt=0, description="Longest wait in seconds between two retries of a task."
    )
    batch_chunk_rows: int = Field(
        10_000, ge=1, description="Rows read, scored, stored and written at a time by batch files."
    )
    batch_dir: Path | None = Field(
        None, description="Uploaded batch files and scored outputs; default: data_dir/batch."
    )
    max_upload_bytes: int = Field(
        1 << 30, ge=1024, description="Largest batch file accepted by POST /batch, in bytes."
    )
    worker_metrics_host: str = Field(
        "127.0.0.1", description="Host the worker's Prometheus /metrics endpoint binds."
    )
    worker_metrics_port: int = Field(
        9101,
        ge=0,
        le=65535,
        description="Port of the worker's Prometheus /metrics (threads and solo pools); "
        "0 turns it off.",
    )
    worker_metrics_url: str | None = Field(
        None,
        description="URL the UI reads the worker's served model from; default: "
        "http://worker_metrics_host:worker_metrics_port/metrics (none when the port is 0).",
    )
    amqp_consumer: bool = Field(
        True,
        description="Run the plain-AMQP consumer in `lifecycle worker` when broker_url is amqp://.",
    )
    amqp_request_queue: str = Field(
        "prediction_requests", description="Durable queue of plain-AMQP JSON scoring requests."
    )
    amqp_result_exchange: str = Field(
        "prediction_results", description="Topic exchange plain-AMQP results are published to."
    )
    amqp_dead_letter_queue: str = Field(
        "prediction_requests.dead_letter",
        description="Queue receiving malformed plain-AMQP messages with the reason.",
    )

    # Drift and quality reports (reports/); how they decide: conf/drift.yaml.
    report_last: int = Field(
        5_000, ge=1, description="Predictions in a report's window when none is given (--last)."
    )
    report_sample_rows: int = Field(
        50_000,
        ge=100,
        description="Most predictions of a window a report reads: a larger window is read as "
        "a uniform random sample of this many rows, drawn in the database.",
    )
    report_reference_rows: int = Field(
        50_000,
        ge=100,
        description="Most training rows of a version used as the reference (sampled once, "
        "cached per version).",
    )
    report_min_rows: int = Field(
        30, ge=1, description="Fewest predictions a window must hold for a drift report."
    )
    report_interval: float = Field(
        3600.0,
        gt=0,
        description="Seconds between scheduled reports (the drift_check DAG runs hourly); the "
        "API exports it and an alert fires when the latest report is older than twice this.",
    )
    monitoring_experiment: str = Field(
        "lifecycle-monitoring", description="MLflow experiment holding one run per report."
    )

    # The Streamlit app (ui/).
    ui_host: str = Field("127.0.0.1", description="Host `lifecycle ui` binds.")
    ui_port: int = Field(8501, ge=1, le=65535, description="Port `lifecycle ui` binds.")
    grafana_url: str | None = Field(
        None, description="Grafana the UI links to (compose runs one on :3000); none: no link."
    )
    public_api_url: str | None = Field(
        None,
        description="The API's address as a browser reaches it, for the UI's links; "
        "default: the API URL.",
    )
    public_mlflow_url: str | None = Field(
        None,
        description="MLflow's address as a browser reaches it, for the UI's links; "
        "default: the tracking URI.",
    )
    ui_timeout: float = Field(
        10.0, gt=0, description="Seconds the UI waits for one API or MLflow call."
    )

    # Airflow (pipelines/): its own virtualenv, started by `lifecycle up`.
    airflow_venv: Path = Field(
        PROJECT_ROOT / ".venv-airflow",
        description="Airflow's own virtualenv (`make up` and `make test` build it).",
    )
    airflow_home: Path | None = Field(
        None, description="AIRFLOW_HOME of the embedded Airflow; default: data_dir/airflow."
    )
    airflow_host: str = Field("127.0.0.1", description="Host Airflow's API server binds.")
    airflow_port: int = Field(
        8080, ge=1, le=65535, description="Port of Airflow's API server and UI."
    )
    airflow_log_port: int = Field(
        8793, ge=1, le=65535, description="Port Airflow's task log server binds."
    )
    airflow_database_url: str | None = Field(
        None,
        description="Airflow's metadata database (SQLAlchemy URL); default: SQLite under "
        "airflow_home, or database '<name>_airflow' beside a PostgreSQL database_url.",
    )
    pipeline_dir: Path | None = Field(
        None,
        description="The batch_scoring DAG's folders (inbox/, done/, failed/); "
        "default: data_dir/pipelines.",
    )

    actor: str | None = Field(
        None,
        validation_alias=AliasChoices("LIFECYCLE_ACTOR", "USER"),
        description="Who registry actions are recorded as (promoted_by); default: $USER.",
    )

    def resolved_api_url(self) -> str:
        return (self.api_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    def resolved_public_api_url(self) -> str:
        return (self.public_api_url or self.resolved_api_url()).rstrip("/")

    def resolved_public_mlflow_url(self) -> str:
        return (self.public_mlflow_url or self.resolved_tracking_uri()).rstrip("/")

    def resolved_worker_metrics_url(self) -> str | None:
        if self.worker_metrics_url:
            return self.worker_metrics_url
        if not self.worker_metrics_port:
            return None
        return f"http://{self.worker_metrics_host}:{self.worker_metrics_port}/metrics"

    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"http://{self.tracking_host}:{self.tracking_port}"

    def resolved_backend_store_uri(self) -> str:
        return self.backend_store_uri or f"sqlite:///{self.resolved_data_dir() / 'mlflow.db'}"

    def resolved_artifacts_destination(self) -> str:
        return self.artifacts_destination or str(self.resolved_data_dir() / "artifacts")

    def resolved_prediction_retention(self) -> timedelta | None:
        """prediction_retention as a duration; a ConfigError naming it when malformed."""
        if not self.prediction_retention:
            return None
        return parse_duration(self.prediction_retention, "prediction_retention")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir() / 'lifecycle.db'}"

    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.resolved_data_dir() / 'broker.db'}"

    def resolved_result_backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.database_url:
            return f"db+{self.database_url}"
        return f"db+sqlite:///{self.resolved_data_dir() / 'results.db'}"

    def resolved_batch_dir(self) -> Path:
        return (self.batch_dir or self.resolved_data_dir() / "batch").expanduser().resolve()

    def resolved_reports_dir(self) -> Path:
        """Local cache of reference profiles (one folder per model version)."""
        return self.resolved_data_dir() / "reports"

    def resolved_spool_dir(self) -> Path:
        spool = self.prediction_spool_dir
        return spool.expanduser().resolve() if spool else self.resolved_data_dir() / "spool"

    def resolved_airflow_home(self) -> Path:
        return (self.airflow_home or self.resolved_data_dir() / "airflow").expanduser().resolve()

    def resolved_pipeline_dir(self) -> Path:
        folder = self.pipeline_dir or self.resolved_data_dir() / "pipelines"
        return folder.expanduser().resolve()

    def registered_model_name(self, dataset: str | None = None) -> str:
        return self.model_name or f"{dataset or self.dataset}-classifier"

"""A whole scoring stack for tests: MLflow on PostgreSQL, `lifecycle serve` and `lifecycle
worker` as subprocesses on a fresh RabbitMQ vhost, iris v1 in Production."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from kombu import Connection, Consumer, Queue
from kombu.message import Message
from mlflow.tracking import MlflowClient

from lifecycle.core.settings import PROJECT_ROOT, Settings
from tests.support.api import IRIS_ROW, Api, serve_api
from tests.support.services import TrackingServer, free_port
from tests.support.worker import Worker, rabbit_vhost, start_worker
from training.train import TrainRequest, train

# The stack's API and worker share these, so admin and webhook routes are live for every module.
ADMIN_TOKEN = "stack-admin-token"
WEBHOOK_SECRET = "stack-webhook-secret"
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@dataclass
class Stack:
    api: Api
    worker: Worker
    env: dict[str, str]
    broker: str
    name: str
    settings: Settings
    engine: sa.Engine
    workdir: Path
    admin_token: str = ADMIN_TOKEN

    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_token}"}

    def worker_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['LIFECYCLE_WORKER_METRICS_PORT']}/metrics"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, timeout=30)

    def stored(self, where: str, **params: object) -> list[dict[str, object]]:
        sql = f"SELECT request_id, source, model_version FROM prediction_rows WHERE {where}"
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]


@contextmanager
def scoring_stack(
    pg_tracking: TrackingServer, app_database_url: str, workdir: Path
) -> Iterator[Stack]:
    """Iris v1 in Production, `lifecycle serve` and `lifecycle worker` on a fresh vhost."""
    name = f"async-{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(pg_tracking.uri)
    mlflow.set_registry_uri(pg_tracking.uri)
    settings = Settings(
        tracking_uri=pg_tracking.uri,
        database_url=app_database_url,
        data_dir=workdir / "data",
        conf_dir=PROJECT_ROOT / "conf",
        experiment_name=f"async-{workdir.name}",
        model_name=name,
    )
    v1 = train(settings, TrainRequest(dataset="iris", register=True, model_name=name))
    MlflowClient(pg_tracking.uri).transition_model_version_stage(
        name, str(v1.version), "Production", archive_existing_versions=True
    )
    engine = sa.create_engine(app_database_url)
    with rabbit_vhost() as broker:
        env = {
            "MLFLOW_TRACKING_URI": pg_tracking.uri,
            "LIFECYCLE_DATABASE_URL": app_database_url,
            "LIFECYCLE_BROKER_URL": broker,
            "LIFECYCLE_MODEL_NAME": name,
            "LIFECYCLE_POLL_INTERVAL": "0.5",
            "LIFECYCLE_DATA_DIR": str(workdir / "data"),
            "LIFECYCLE_BATCH_CHUNK_ROWS": "2000",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "LIFECYCLE_ADMIN_TOKEN": ADMIN_TOKEN,
            "LIFECYCLE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            # A port of its own: 9101 may be held by another worker on the machine.
            "LIFECYCLE_WORKER_METRICS_PORT": str(free_port()),
        }
        with serve_api(env, workdir) as api:
            worker = start_worker(env, workdir / "worker.log")
            stack = Stack(api, worker, env, broker, name, settings, engine, workdir)
            try:
                yield stack
            finally:
                stack.worker.stop()
    engine.dispose()


def iris_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    centre = np.array(IRIS_ROW)
    return pd.DataFrame(rng.normal(centre, 0.8, size=(n, 4)).round(2), columns=FEATURES)


def drain(conn: Connection, queue: Queue, n: int, timeout: float = 30) -> list[Message]:
    got: list[Message] = []

    def keep(message: Message) -> None:
        got.append(message)
        message.ack()

    deadline = time.monotonic() + timeout
    # on_message: the raw message, since a dead letter's body need not decode.
    with Consumer(conn.channel(), [queue], on_message=keep, no_ack=False):
        while len(got) < n and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                continue
    assert len(got) == n, f"{queue.name}: {len(got)} of {n} messages"
    return got

"""The prediction database goes away while the API is under load and comes back: every
request is answered, and every prediction is stored exactly once (the API's whole path:
HTTP → scoring → store queue → spool → replay). The database is a throwaway PostgreSQL
cluster the test stops abruptly and starts again on the same port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

import registry
from lifecycle.core.settings import Settings
from tests.support.api import IRIS_ROW, serve_api, wait_version
from tests.support.pgcluster import PgCluster, pg_cluster
from training.train import TrainRequest, train

pytestmark = pytest.mark.postgres

N = 900
NAME = "outage-iris"


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    with pg_cluster() as cluster:
        yield cluster


def stored_ids(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT request_id FROM prediction_rows"))]
    finally:
        engine.dispose()


def test_requests_during_a_database_outage_are_all_stored_once(
    settings: Settings, cluster: PgCluster, tmp_path: Path
) -> None:
    version = train(settings, TrainRequest(dataset="iris", register=True, model_name=NAME)).version
    assert version is not None
    registry.promote(settings, NAME, version, "Production")
    env = {
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri(),
        "LIFECYCLE_MODEL_NAME": NAME,
        "LIFECYCLE_DATABASE_URL": cluster.url,
        "LIFECYCLE_PREDICTION_FLUSH_INTERVAL": "0.05",
    }
    answered: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    with serve_api(env, tmp_path / "api") as api:
        wait_version(api.url, version)
        marks = {"outage": threading.Event(), "back": threading.Event()}

        def send(count: int) -> None:
            with httpx.Client(base_url=api.url, timeout=30) as http:
                for _ in range(count):
                    response = http.post("/predict", json={"features": IRIS_ROW})
                    with lock:
                        if response.status_code != 200:
                            failures.append(f"{response.status_code} {response.text[:200]}")
                            continue
                        answered.append(response.json()["request_id"])
                        done = len(answered)
                    if done == N // 3:
                        cluster.stop("immediate")
                        marks["outage"].set()
                    if done == 2 * N // 3:
                        cluster.start()
                        marks["back"].set()

        senders = [threading.Thread(target=send, args=(N // 3,)) for _ in range(3)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(300)
        assert marks["outage"].is_set() and marks["back"].is_set()
        assert failures == []
        assert len(answered) == N

        # The store replays its spool once the database answers again.
        deadline = 60.0
        start = time.monotonic()
        ids = stored_ids(cluster.url)
        while len(ids) < N and time.monotonic() - start < deadline:
            time.sleep(0.5)
            ids = stored_ids(cluster.url)
        metrics = httpx.get(f"{api.url}/metrics", timeout=10).text
    assert len(ids) == N, f"{len(ids)} of {N} stored"
    assert len(set(ids)) == N
    assert set(ids) == set(answered)
    spooled = [
        line
        for line in metrics.splitlines()
        if line.startswith("lifecycle_prediction_log_spooled_total")
    ]
    assert spooled and float(spooled[0].rpartition(" ")[2]) > 0, "the outage never hit the store"

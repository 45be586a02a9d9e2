"""Fault injection against `lifecycle serve`: a worker killed, a SIGTERM under load, an
unwritable spool with the database down, a prediction log stalled behind a table lock, a
refused promotion, the registry going away.

One throwaway tracking server for the module (its own PostgreSQL backend and a fixed port),
because the last test stops it and starts it again on the same port; each test serves its
own registered model, copies of one trained version, so no test sees another's promotions.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from lifecycle.core import mlflow_gateway
from lifecycle.core.settings import Settings
from tests.support.api import (
    IRIS_ROW,
    LoadLoop,
    Result,
    metric_value,
    register_broken_version,
    serve_api,
    wait_version,
)
from tests.support.services import (
    TRACKING_SERVER_ENV,
    free_port,
    stop_process_group,
    temp_database,
    wait_http,
)
from training.train import TrainRequest, train

pytestmark = pytest.mark.postgres

POLL = 1.0


@dataclass
class Registry:
    """The module's tracking server: restartable on the same port and backend."""

    backend: str
    workdir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "LIFECYCLE_BACKEND_STORE_URI": self.backend,
            "LIFECYCLE_ARTIFACTS_DESTINATION": str(self.workdir / "artifacts"),
            "LIFECYCLE_TRACKING_PORT": str(self.port),
            "LIFECYCLE_DATA_DIR": str(self.workdir),
            **TRACKING_SERVER_ENV,
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        with (self.workdir / "mlflow-server.log").open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lifecycle", "tracking"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_http(f"{self.uri}/health", 120, self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None


@dataclass
class World:
    registry: Registry
    settings: Settings
    client: MlflowClient
    source: str  # artifacts of a trained iris model, registered again under each test's name
    workdir: Path
    database_url: str

    def model(self, name: str, copies: int = 1) -> list[str]:
        # Another module's fixtures may have pointed MLflow's globals elsewhere.
        mlflow.set_tracking_uri(self.registry.uri)
        mlflow.set_registry_uri(self.registry.uri)
        return [
            str(mlflow.register_model(self.source, name, await_registration_for=0).version)
            for _ in range(copies)
        ]

    def promote(self, name: str, version: str) -> None:
        self.client.transition_model_version_stage(
            name, version, "Production", archive_existing_versions=True
        )

    def env(self, name: str, **extra: str) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.registry.uri,
            "LIFECYCLE_MODEL_NAME": name,
            "LIFECYCLE_DATABASE_URL": self.database_url,
            "LIFECYCLE_POLL_INTERVAL": str(POLL),
            "LIFECYCLE_SHUTDOWN_GRACE_SECONDS": "0",
            **extra,
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, app_database_url: str) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("faults")
    with temp_database("lc_faults") as backend:
        registry = Registry(backend, workdir / "tracking", free_port())
        registry.workdir.mkdir()
        registry.start()
        try:
            settings = Settings(
                tracking_uri=registry.uri,
                database_url=app_database_url,
                data_dir=workdir / "data",
                experiment_name="faults",
            )
            version = train(settings, TrainRequest("iris", register=True, model_name="faults"))
            client = mlflow_gateway.connect(settings)
            source = client.get_model_version("faults", str(version.version)).source
            yield World(registry, settings, client, source, workdir, app_database_url)
        finally:
            registry.stop()


def _worker_pids(parent: int) -> set[int]:
    """uvicorn's worker processes: the parent's children that run multiprocessing.spawn."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    pids = set()
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            pids.add(pid)
    return pids


def _failures(results: list[Result]) -> list[Result]:
    return [r for r in results if r.status != 200]


def test_restarted_worker_takes_no_traffic_before_its_model_loads(world: World) -> None:
    name = "faults-kill"
    (version,) = world.model(name)
    world.promote(name, version)
    with serve_api(world.env(name), world.workdir / "kill", workers=2) as api:
        wait_version(api.url, version, in_a_row=10)
        workers = _worker_pids(api.process.pid)
        assert len(workers) == 2, workers
        victim = min(workers)
        with LoadLoop(api.url, threads=4) as load:
            time.sleep(1.0)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while len(_worker_pids(api.process.pid) - workers) < 1:
                assert time.monotonic() < deadline, "the supervisor did not restart the worker"
                time.sleep(0.1)
            # The replacement loads its model (seconds) and then shares the traffic.
            replacement = (_worker_pids(api.process.pid) - workers).pop()
            while f"Started server process [{replacement}]" not in api.logs():
                time.sleep(0.1)
            while api.logs().count("Application startup complete") < 3:
                assert time.monotonic() < deadline, "the replacement never finished start-up"
                time.sleep(0.1)
            time.sleep(2.0)
        results = load.snapshot()
    # Only requests the killed worker had already taken may fail (SIGKILL loses them); a
    # request sent after the kill must be answered, and nothing may be answered 503.
    late = [r for r in _failures(results) if r.sent > killed_at + 0.05 or r.status is not None]
    assert late == [], late[:5]
    assert len(_failures(results)) <= 4
    assert sum(1 for r in results if r.sent > killed_at) > 100
    log = api.logs()
    after_start = log[log.index(f"Started server process [{replacement}]") :]
    # The replacement loaded its model before uvicorn let it accept connections.
    assert after_start.index(f"serving {name} v{version}") < after_start.index(
        "Application startup complete"
    )


def test_sigterm_drains_ready_first_then_finishes_what_it_read(world: World) -> None:
    name = "faults-term"
    (version,) = world.model(name)
    world.promote(name, version)
    grace = 2.0
    env = world.env(name, LIFECYCLE_SHUTDOWN_GRACE_SECONDS=str(grace))
    ready: list[tuple[float, float, int | None]] = []  # sent, answered, status
    stop = threading.Event()

    def watch_ready(url: str) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status: int | None = httpx.get(f"{url}/ready", timeout=2).status_code
            except httpx.HTTPError:
                status = None
            ready.append((sent, time.monotonic(), status))
            time.sleep(0.05)

    with serve_api(env, world.workdir / "term") as api:
        wait_version(api.url, version)
        watcher = threading.Thread(target=watch_ready, args=(api.url,), daemon=True)
        watcher.start()
        with LoadLoop(api.url, threads=4) as load:
            time.sleep(1.0)
            term_at = time.monotonic()
            api.process.send_signal(signal.SIGTERM)
            api.process.wait(30)
            stopped_at = time.monotonic()
        stop.set()
        watcher.join(5)
        results = load.snapshot()
    grace_end = term_at + grace
    assert stopped_at >= grace_end, "the server stopped before its grace period ended"
    during = [status for sent, got, status in ready if sent > term_at and got < grace_end]
    assert during and all(status == 503 for status in during), during
    before = [status for sent, got, status in ready if got < term_at]
    assert before and all(status == 200 for status in before), before
    # A request sent in the last moments of the grace may reach the server after it closed its
    # socket (a connect took 50 ms on a loaded machine): those are not the server's to answer.
    before_end = [r for r in results if r.sent < grace_end - 0.25]
    assert sum(1 for r in before_end if r.sent > term_at) > 50, "no load during the grace"
    assert _failures(before_end) == [], _failures(before_end)[:5]


def test_unwritable_spool_with_the_database_down_starts_and_counts_drops(
    world: World, tmp_path: Path
) -> None:
    name = "faults-spool"
    (version,) = world.model(name)
    world.promote(name, version)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the spool folder should be")
    env = world.env(
        name,
        LIFECYCLE_DATABASE_URL=f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/gone",
        LIFECYCLE_PREDICTION_SPOOL_DIR=str(blocker / "spool"),
        LIFECYCLE_PREDICTION_FLUSH_INTERVAL="0.01",
    )
    with serve_api(env, tmp_path / "api") as api:
        wait_version(api.url, version)
        with LoadLoop(api.url, threads=2) as load:
            time.sleep(3.0)
        results = load.snapshot()
        ready = httpx.get(f"{api.url}/ready", timeout=5)
        metrics = httpx.get(f"{api.url}/metrics", timeout=10).text
        log = api.logs()
    assert len(results) > 100 and _failures(results) == []
    assert ready.status_code == 200, ready.text  # predictions still answer: not a 503
    details = ready.json()["details"]
    assert details["store"] == "degraded"
    assert "unusable" in details["store_error"] and "database unavailable" in details["store_error"]
    dropped = metric_value(metrics, "lifecycle_prediction_log_dropped_total")
    assert dropped > 0
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) <= 2, errors[:5]
    drops = [line for line in log.splitlines() if "dropped" in line and "prediction" in line]
    assert drops and all("unusable" in line for line in drops), drops
    assert "queue was full" not in log


def test_a_stalled_prediction_log_sheds_load_and_keeps_every_answer(
    world: World, tmp_path: Path
) -> None:
    """The database blocks every write (a lock held on the predictions table): requests are
    still answered at once until the queue, the overflow and the spool are full, then refused
    with 503 and Retry-After; once the lock goes, every answered prediction is stored once and
    no refused one is."""
    name = "faults-shed"
    (version,) = world.model(name)
    world.promote(name, version)
    env = world.env(
        name,
        LIFECYCLE_PREDICTION_QUEUE_SIZE="20",
        LIFECYCLE_PREDICTION_SPOOL_MAX_BYTES="20000",
        LIFECYCLE_PREDICTION_FLUSH_INTERVAL="0.01",
    )
    engine = sa.create_engine(world.database_url)
    answered: list[str] = []
    shed: list[str] = []
    try:
        with (
            serve_api(env, tmp_path / "api") as api,
            httpx.Client(base_url=api.url, timeout=10) as client,
        ):
            wait_version(api.url, version)
            assert client.post("/predict", json={"features": IRIS_ROW}).status_code == 200
            with engine.connect() as blocker:
                blocker.begin()
                blocker.execute(sa.text("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE"))
                for i in range(300):
                    request_id = f"shed-{i:04d}-{version}"
                    response = client.post(
                        "/predict",
                        json={"features": IRIS_ROW},
                        headers={"X-Request-Id": request_id},
                    )
                    if response.status_code == 200:
                        answered.append(request_id)
                        continue
                    assert response.status_code == 503, response.text
                    assert response.headers["retry-after"] == "1"
                    assert "prediction log is saturated" in response.json()["detail"]
                    shed.append(request_id)
                blocker.rollback()
            assert answered and shed, (len(answered), len(shed))
            assert answered[-1] < shed[0], "refusals start once the log is full, not before"
            stored = _stored_ids(engine, answered + shed, expect=len(answered))
            metrics = client.get("/metrics").text
    finally:
        engine.dispose()
    assert stored == sorted(answered), "every answered prediction is stored, and only those"
    assert metric_value(metrics, "lifecycle_prediction_log_shed_total") == len(shed)
    assert metric_value(metrics, "lifecycle_prediction_log_dropped_total") == 0
    assert metric_value(metrics, "lifecycle_prediction_log_spooled_total") > 0


def _stored_ids(engine: sa.Engine, ids: list[str], expect: int) -> list[str]:
    query = sa.text("SELECT request_id FROM prediction_rows WHERE request_id = ANY(:ids)")
    deadline = time.monotonic() + 60
    while True:
        with engine.connect() as conn:
            found = sorted(row[0] for row in conn.execute(query, {"ids": ids}))
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_refused_promotion_keeps_serving_with_the_registrys_labels(world: World) -> None:
    name = "faults-stale"
    v1, v2 = world.model(name, copies=2)
    world.promote(name, v1)
    with serve_api(world.env(name), world.workdir / "stale") as api:
        wait_version(api.url, v1)
        world.promote(name, v2)
        wait_version(api.url, v2)
        world.client.set_registered_model_alias(name, "production", v2)
        broken = register_broken_version(world.client, name, v2)
        world.promote(name, broken)  # v2 is Archived now
        deadline = time.monotonic() + 30
        details: dict = {}
        while time.monotonic() < deadline:
            body = httpx.get(f"{api.url}/ready", timeout=5).json()
            details = body["details"]
            if details["stale"] and body["model"]["stage"] == "Archived":
                break
            time.sleep(0.2)
        assert details["stale"] is True and details["target_version"] == broken, details
        assert body["model"]["version"] == v2 and body["model"]["alias"] == "production"
        answer = httpx.post(f"{api.url}/predict", json={"features": IRIS_ROW})
        metrics = httpx.get(f"{api.url}/metrics", timeout=10).text
    assert answer.status_code == 200
    assert answer.json()["model"]["version"] == v2
    assert answer.json()["model"]["stage"] == "Archived"
    assert answer.json()["model"]["alias"] == "production"
    assert answer.headers["x-model-stage"] == "Archived"
    assert metric_value(metrics, "lifecycle_model_stale", name=name) == 1
    served = {"name": name, "version": v2}
    assert metric_value(metrics, "lifecycle_model_info", stage="Archived", **served) == 1
    assert metric_value(metrics, "lifecycle_model_info", stage="Production", **served) == 0


def test_promotion_after_a_registry_outage_arrives_within_a_poll(world: World) -> None:
    """Last in the module: it stops the module's tracking server and starts it again."""
    name = "faults-outage"
    v1, v2 = world.model(name, copies=2)
    world.promote(name, v1)
    with serve_api(world.env(name), world.workdir / "outage") as api:
        wait_version(api.url, v1)
        world.registry.stop()
        down_at = time.monotonic()
        time.sleep(12)  # long enough for the old back-off to reach 16 s
        details = httpx.get(f"{api.url}/ready", timeout=5).json()["details"]
        assert details["registry"] == "degraded"
        assert "ConnectionRefusedError" in details["registry_error"], details
        world.registry.start()
        back_at = time.monotonic()
        # The poller notices within its capped back-off (2 polls; it was 30 s), plus the
        # first answers of a server that has just started.
        while httpx.get(f"{api.url}/ready", timeout=5).json()["details"]["registry"] != "ok":
            assert time.monotonic() - back_at < 2 * POLL + 5, "registry outage not noticed"
            time.sleep(0.1)
        promoted_at = time.monotonic()
        world.promote(name, v2)
        wait_version(api.url, v2, timeout=30)
        took = time.monotonic() - promoted_at
        log = api.logs()
    # The bound is on noticing the promotion; the load itself (download from a server that
    # has just started, on a busy machine) is measured by the API and taken out.
    loaded = re.search(rf"serving {name} v{v2} .*loaded in ([0-9.]+)s", log)
    assert loaded, log[-2000:]
    noticed = took - float(loaded.group(1))
    assert noticed <= POLL + 2, f"v{v2} served {took:.1f}s after its promotion"
    # One warning when the outage starts, then one a minute, not one per probe (every 2 s).
    warnings = log.count("registry unreachable")
    assert warnings <= 2 + (back_at - down_at) // 60, f"{warnings} warnings"

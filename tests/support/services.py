"""Real services for tests: databases on the machine's PostgreSQL and MLflow servers on them."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

POSTGRES_ENV = "LIFECYCLE_TEST_POSTGRES_URL"
AMQP_ENV = "LIFECYCLE_TEST_AMQP_URL"
REQUIRE_ENV = "LIFECYCLE_TEST_REQUIRE_SERVICES"
# Used when the variables above are unset and these answer: `make test` on a machine with
# PostgreSQL and RabbitMQ at their standard addresses runs everything with no setup.
LOCAL_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
# MLflow's server starts a job runner (huey; GenAI scoring and trace archival, which Lifecycle
# does not use) some 20 s after it starts; once running it adds ~10 s to every stop.
TRACKING_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _unavailable(message: str) -> None:
    """Skip with how to enable the test, or fail when CI demands every service."""
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(message)
    pytest.skip(message)


def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV) or _local_postgres()
    if not url:
        _unavailable(
            f"PostgreSQL tests need a server at {LOCAL_POSTGRES_URL} or {POSTGRES_ENV} set to one"
        )
        raise AssertionError  # unreachable: skip/fail raise
    return url


def amqp_url() -> str:
    url = os.environ.get(AMQP_ENV) or _local_amqp()
    if not url:
        _unavailable(f"RabbitMQ tests need a broker at {LOCAL_AMQP_URL} or {AMQP_ENV} set to one")
        raise AssertionError
    return url


@functools.cache
def _local_postgres() -> str | None:
    """The standard local PostgreSQL when it answers and accepts the login, else None."""
    if not _port_open("127.0.0.1", 5432):
        return None
    engine = sa.create_engine(LOCAL_POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    return LOCAL_POSTGRES_URL


@functools.cache
def _local_amqp() -> str | None:
    """The standard local RabbitMQ when it answers and accepts guest/guest, else None."""
    if not _port_open("127.0.0.1", 5672):
        return None
    from kombu import Connection

    try:
        with Connection(LOCAL_AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception:  # any login or protocol failure means "not usable", not a test error
        return None
    return LOCAL_AMQP_URL


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def temp_database(prefix: str = "lc_test") -> Iterator[str]:
    """A fresh database on the test PostgreSQL, dropped afterwards; yields its URL."""
    admin = sa.make_url(postgres_admin_url())
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        _unavailable(f"PostgreSQL at {admin.render_as_string()} is unreachable: {exc}")
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@dataclass
class TrackingServer:
    uri: str
    backend_store_uri: str
    artifacts: Path
    process: subprocess.Popen[bytes]
    log: Path


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def tracking_server(
    backend_store_uri: str, workdir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[TrackingServer]:
    """`lifecycle tracking` on the given backend: the same command users run."""
    port = free_port()
    artifacts = workdir / "artifacts"
    log = workdir / "mlflow-server.log"
    env = {
        **os.environ,
        "LIFECYCLE_BACKEND_STORE_URI": backend_store_uri,
        "LIFECYCLE_ARTIFACTS_DESTINATION": str(artifacts),
        "LIFECYCLE_TRACKING_PORT": str(port),
        "LIFECYCLE_DATA_DIR": str(workdir),
        **TRACKING_SERVER_ENV,
        **(extra_env or {}),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifecycle", "tracking"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", 120, proc)
        yield TrackingServer(uri, backend_store_uri, artifacts, proc, log)
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass

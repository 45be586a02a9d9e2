"""The REST API as tests meet it: `lifecycle serve` in a subprocess, and a load loop."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import mlflow
from mlflow.tracking import MlflowClient

from tests.support.services import free_port, stop_process_group, wait_http

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


@dataclass
class Api:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serve_api(
    env: dict[str, str], workdir: Path, port: int | None = None, workers: int = 1
) -> Iterator[Api]:
    """`lifecycle serve` with the given LIFECYCLE_* environment; waits until it answers."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"api-{port}.log"
    full = {
        **os.environ,
        "LIFECYCLE_DATA_DIR": str(workdir / "data"),
        # No load balancer to drain in tests: stopping takes its 5 s only where a test asks.
        "LIFECYCLE_SHUTDOWN_GRACE_SECONDS": "0",
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lifecycle",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 60, proc)
        yield Api(url, proc, log)
    finally:
        stop_process_group(proc)


def wait_version(url: str, version: str, timeout: float = 60, in_a_row: int = 1) -> None:
    """Until /ready reports the version `in_a_row` times (new connections, any worker)."""
    deadline = time.monotonic() + timeout
    last = None
    streak = 0
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/ready", timeout=5)
        last = response.text
        if response.status_code == 200 and response.json()["model"]["version"] == version:
            streak += 1
            if streak >= in_a_row:
                return
        else:
            streak = 0
        time.sleep(0.1)
    raise TimeoutError(f"API did not serve v{version} within {timeout}s: {last}")


@dataclass
class Result:
    sent: float
    received: float
    status: int | None
    version: str | None
    error: str | None = None


@dataclass
class LoadLoop:
    """Threads sending /predict back to back; every answer is kept with its send time."""

    url: str
    threads: int = 2
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> LoadLoop:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post("/predict", json={"features": IRIS_ROW})
                    version = None
                    if response.status_code == 200:
                        version = response.json()["model"]["version"]
                        assert response.headers["x-model-version"] == version
                    result = Result(sent, time.monotonic(), response.status_code, version)
                except Exception as exc:
                    result = Result(sent, time.monotonic(), None, None, repr(exc))
                with self._lock:
                    self.results.append(result)

    def snapshot(self) -> list[Result]:
        with self._lock:
            return list(self.results)


def metric_value(text: str, metric_name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include the given ones (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(metric_name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != metric_name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def register_broken_version(client: MlflowClient, name: str, good_version: str) -> str:
    """A new version of NAME whose MLmodel is fine but whose pickled model is garbage."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{good_version}", dst_path=tmp
            )
        )
        for pickled in local.glob("*.pkl"):
            pickled.write_bytes(b"this is not a pickle")
        target = Path(tmp) / "broken"
        shutil.copytree(local, target / "model")
        with mlflow.start_run(run_name="broken-artifacts") as run:
            mlflow.log_artifacts(str(target / "model"), "model")
        source = f"{run.info.artifact_uri}/model"
        version = client.create_model_version(name, source, run_id=run.info.run_id)
    return str(version.version)


# /batch's file uploads need raw-byte serializers for text/csv and Parquet (see the file).
SCHEMATHESIS_HOOKS = Path(__file__).parent / "schemathesis_hooks.py"


def run_schemathesis(
    api_url: str, report_dir: Path, admin: str, *options: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """schemathesis against the API's OpenAPI document, seeded, with the admin token."""
    head = ["--config-file", str(config)] if config else []
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            *head,
            "run",
            f"{api_url}/openapi.json",
            *options,
            "--max-examples",
            "40",
            "--seed",
            "4",
            "--request-timeout",
            "10",
            "--header",
            f"Authorization: Bearer {admin}",
            "--report-dir",
            str(report_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(SCHEMATHESIS_HOOKS)},
    )


def assert_schemathesis_passed(result: subprocess.CompletedProcess[str]) -> None:
    out = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, out
    assert re.search(r"\d+ passed", result.stdout), out
    assert not re.search(r"\d+ (failed|errored)", result.stdout), out

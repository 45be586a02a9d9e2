"""`lifecycle worker` as tests meet it: a subprocess on an isolated RabbitMQ vhost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from tests.support.services import _unavailable, amqp_url, stop_process_group


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def rabbit_vhost() -> Iterator[str]:
    """A fresh vhost on the test RabbitMQ (its queues are this module's alone); yields its URL."""
    base = urlsplit(amqp_url())
    if shutil.which("rabbitmqctl") is None:
        _unavailable("RabbitMQ isolation needs rabbitmqctl on PATH (a vhost per test module)")
    vhost = f"lc_test_{uuid.uuid4().hex[:10]}"
    user = base.username or "guest"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    except (subprocess.CalledProcessError, OSError) as exc:
        _unavailable(f"cannot create a RabbitMQ vhost with rabbitmqctl: {exc}")
    try:
        yield urlunsplit((base.scheme, base.netloc, "/" + quote(vhost, safe=""), "", ""))
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no cleanup, no acks."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        stop_process_group(self.process)


def start_worker(env: dict[str, str], log: Path, *args: str, timeout: float = 90) -> Worker:
    """`python -m lifecycle worker`, waiting for Celery's ready line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        start = out.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifecycle", "worker", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{worker.logs()}")
        with log.open("rb") as f:
            f.seek(start)
            if b" ready." in f.read():
                return worker
        time.sleep(0.2)
    worker.stop()
    raise TimeoutError(f"worker not ready in {timeout}s:\n{worker.logs()}")


def wait_task(
    client: httpx.Client, task_id: str, timeout: float = 60, until: tuple[str, ...] = ("success",)
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in until:
            return body
        if body["status"] == "failure":
            raise AssertionError(f"task {task_id} failed: {body}")
        time.sleep(0.1)
    raise TimeoutError(f"task {task_id} not {until} in {timeout}s: {body}")

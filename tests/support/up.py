"""`lifecycle up` as a user runs it: a foreground process printing its URLs."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lifecycle.core.settings import PROJECT_ROOT
from tests.support.cli import cli_env
from tests.support.services import free_port

READY_LINE = "Press Ctrl-C to stop."


@dataclass
class UpProcess:
    process: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    data_dir: Path
    output: list[str] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return "".join(self.output)

    def stop(self) -> None:
        """Ctrl-C as the terminal sends it (SIGTERM here), then the rest of the output."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        while True:
            try:
                item = self.lines.get(timeout=1)
            except queue.Empty:
                break
            if item is None:
                break
            self.output.append(item)


@contextmanager
def lifecycle_up(
    data_dir: Path, *args: str, timeout: float = 300, **extra_env: str
) -> Iterator[UpProcess]:
    """`lifecycle up *args` (with Airflow unless "--no-airflow" is among them)."""
    # The Airflow a custom `make AIRFLOW_VENV=...` built (cli_env drops LIFECYCLE_*).
    venv = os.environ.get("LIFECYCLE_AIRFLOW_VENV")
    passed = {"LIFECYCLE_AIRFLOW_VENV": venv} if venv else {}
    env = cli_env(
        LIFECYCLE_DATA_DIR=str(data_dir),
        LIFECYCLE_TRACKING_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
        # `up` starts the API, the UI and Airflow too: free ports, so a busy :8000, :8501,
        # :8080 or :8793 cannot fail the run.
        **{
            "LIFECYCLE_API_PORT": str(free_port()),
            "LIFECYCLE_UI_PORT": str(free_port()),
            "LIFECYCLE_AIRFLOW_PORT": str(free_port()),
            "LIFECYCLE_AIRFLOW_LOG_PORT": str(free_port()),
            **passed,
            **extra_env,
        },
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle", "up", *args],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    up = UpProcess(proc, lines, data_dir)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty as exc:
                raise TimeoutError(f"lifecycle up not ready in {timeout}s:\n{up.text()}") from exc
            if line is None:
                raise RuntimeError(f"lifecycle up exited early:\n{up.text()}")
            up.output.append(line)
            match = re.match(r"\s+(.+?)\s{2,}(https?://\S+)", line)
            if match:
                up.urls[match.group(1)] = match.group(2)
            if READY_LINE in line:
                break
        yield up
    finally:
        up.stop()

"""Child processes for `lifecycle up`: start, watch, and stop them all cleanly.

Each child runs in its own session so that a stop reaches its whole process group
(`mlflow server` and uvicorn spawn workers of their own), and, last, every process left in
that session: Airflow runs each task in a process group of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class Supervisor:
    def __init__(self, log_dir: Path, stop_timeout: float = 20.0) -> None:
        self._log_dir = log_dir
        self._stop_timeout = stop_timeout
        self._children: list[Child] = []
        self.stopping = threading.Event()

    @property
    def children(self) -> list[Child]:
        return list(self._children)

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> Child:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log = self._log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self._children.append(child)
        return child

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.stopping.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def first_exited(self) -> Child | None:
        return next((c for c in self._children if c.process.poll() is not None), None)

    def wait(self, poll: float = 0.5) -> Child | None:
        """Block until a stop is requested (None) or a child exits (that child)."""
        while not self.stopping.wait(poll):
            dead = self.first_exited()
            if dead is not None:
                return dead
        return None

    def stop_all(self) -> None:
        for child in reversed(self._children):
            _signal_group(child.process, signal.SIGTERM)
            # A group of its own inside the session is an Airflow task: on SIGTERM it keeps
            # reporting to an API server that is stopping too, and its scheduler waits for it
            # until the timeout. It is ended at once (Airflow fails it on its next start).
            for pid in session_members(child.process.pid, other_groups=True):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + self._stop_timeout
        for child in reversed(self._children):
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait(5)
            # Workers left behind by a parent that exited first still belong to the group,
            # and processes that made a group of their own still belong to the session.
            _signal_group(child.process, signal.SIGKILL)
            for pid in session_members(child.process.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def session_members(sid: int, *, other_groups: bool = False) -> list[int]:
    """Live (not zombie) processes in session `sid`, from /proc; with `other_groups`, only
    those outside the session leader's process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command name (which may hold spaces): state, ppid, pgrp, session.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) != sid or fields[0] == "Z":
            continue
        if not other_groups or int(fields[2]) != sid:
            members.append(int(stat.parent.name))
    return members


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)

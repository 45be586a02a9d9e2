"""`lifecycle up` with a port already taken: one line naming the port and its holder, fast,
and nothing started (a second `up` used to report success on the first one's health checks).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from lifecycle.core.settings import PROJECT_ROOT
from tests.support.cli import assert_one_line_error, cli_env
from tests.support.services import free_port


def _session_members(sid: int) -> list[int]:
    """Live processes in session `sid`: `up` runs in its own, so any child it started is here."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, session.
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_up_refuses_a_busy_port_before_starting_anything(tmp_path: Path) -> None:
    tracking_port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        api_port = held.getsockname()[1]
        env = cli_env(
            LIFECYCLE_DATA_DIR=str(tmp_path / "home"),
            LIFECYCLE_TRACKING_PORT=str(tracking_port),
            LIFECYCLE_API_PORT=str(api_port),
            LIFECYCLE_WORKER_METRICS_PORT=str(free_port()),
        )
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifecycle", "up"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        stdout, stderr = proc.communicate(timeout=30)
        elapsed = time.monotonic() - started
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert_one_line_error(
            result,
            f"error: port {api_port} (scoring API, LIFECYCLE_API_PORT) is in use "
            f"by pid {os.getpid()} (",
        )
        assert elapsed < 5, f"took {elapsed:.1f}s"
        assert stdout == ""
        assert _session_members(proc.pid) == []
        assert not (tmp_path / "home" / "logs").exists()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", tracking_port)) != 0, "MLflow was started"

"""`lifecycle up` with a port already taken: one line naming the port and its holder, fast,
and nothing started (a second `up` used to report success on the first one's health checks).
"""

from __future__ import annotations

import contextlib
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


def _up_with_held_ports(
    home: Path, held_settings: tuple[str, ...], *args: str, **extra: str
) -> tuple[dict[str, int], subprocess.CompletedProcess[str], float]:
    """`lifecycle up *args` (environment: `extra`) while this process holds the ports of
    `held_settings`: those ports, the result and how long `up` took."""
    ports = {
        name: free_port()
        for name in (
            "LIFECYCLE_TRACKING_PORT",
            "LIFECYCLE_API_PORT",
            "LIFECYCLE_UI_PORT",
            "LIFECYCLE_WORKER_METRICS_PORT",
            "LIFECYCLE_AIRFLOW_PORT",
            "LIFECYCLE_AIRFLOW_LOG_PORT",
        )
    }
    with contextlib.ExitStack() as stack:
        for name in held_settings:
            held = stack.enter_context(socket.socket())
            held.bind(("127.0.0.1", 0))
            held.listen()
            ports[name] = held.getsockname()[1]
        env = cli_env(
            LIFECYCLE_DATA_DIR=str(home), **{k: str(v) for k, v in ports.items()}, **extra
        )
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifecycle", "up", *args],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        stdout, stderr = proc.communicate(timeout=60)
        elapsed = time.monotonic() - started
        assert _session_members(proc.pid) == []
    with socket.socket() as probe:
        probe_port = ports["LIFECYCLE_TRACKING_PORT"]
        assert probe.connect_ex(("127.0.0.1", probe_port)) != 0, "MLflow was started"
    held_ports = {name: ports[name] for name in held_settings}
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return held_ports, result, elapsed


def test_up_refuses_a_busy_port_before_starting_anything(tmp_path: Path) -> None:
    held, result, elapsed = _up_with_held_ports(
        tmp_path / "home", ("LIFECYCLE_API_PORT",), "--no-airflow"
    )
    assert_one_line_error(
        result,
        f"error: port {held['LIFECYCLE_API_PORT']} (scoring API, LIFECYCLE_API_PORT) is in use "
        f"by pid {os.getpid()} (",
    )
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert result.stdout == ""
    assert not (tmp_path / "home" / "logs").exists()


def test_up_checks_airflow_ports_only_when_it_starts_airflow(tmp_path: Path) -> None:
    held, result, _ = _up_with_held_ports(tmp_path / "home", ("LIFECYCLE_AIRFLOW_PORT",))
    assert_one_line_error(
        result,
        f"error: port {held['LIFECYCLE_AIRFLOW_PORT']} (Airflow API server, "
        "LIFECYCLE_AIRFLOW_PORT) is in use by pid ",
    )
    assert not (tmp_path / "home" / "logs").exists()
    # With --no-airflow the same busy port is none of up's business: the UI's is.
    held, result, _ = _up_with_held_ports(
        tmp_path / "home", ("LIFECYCLE_AIRFLOW_PORT", "LIFECYCLE_UI_PORT"), "--no-airflow"
    )
    assert_one_line_error(
        result, f"error: port {held['LIFECYCLE_UI_PORT']} (UI, LIFECYCLE_UI_PORT) is in use"
    )


def test_up_stops_with_the_migration_log_when_airflow_cannot_migrate(tmp_path: Path) -> None:
    # A database Airflow cannot create: `up` names the log and stops what it started (MLflow)
    # before training anything.
    _, result, elapsed = _up_with_held_ports(
        tmp_path / "home",
        (),
        LIFECYCLE_AIRFLOW_DATABASE_URL=f"sqlite:///{tmp_path / 'missing' / 'dir' / 'airflow.db'}",
    )
    log = tmp_path / "home" / "logs" / "airflow-migrate.log"
    assert_one_line_error(result, f"error: airflow db migrate exited with code 1; see {log}")
    assert "airflow.db" in log.read_text()
    assert "training a first model" not in result.stdout
    assert elapsed < 30, f"took {elapsed:.1f}s"


def test_up_names_an_airflow_database_it_cannot_reach(tmp_path: Path) -> None:
    unreachable = f"postgresql+psycopg2://postgres:hidden@127.0.0.1:{free_port()}/lc_airflow"
    _, result, _ = _up_with_held_ports(
        tmp_path / "home", (), LIFECYCLE_AIRFLOW_DATABASE_URL=unreachable
    )
    assert_one_line_error(
        result, "error: Airflow's database postgresql+psycopg2://postgres:***@127.0.0.1:"
    )
    assert "hidden" not in result.stderr

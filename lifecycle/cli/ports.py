"""The ports `lifecycle up` will bind, checked before anything starts.

Without this check a second `up` finds the first one's servers answering its health checks,
prints "Lifecycle is up" and only then fails when its own API cannot bind. The holder of a
busy port is found from /proc (the socket's inode, then the process owning it), so the
error names what to stop.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings

PROC = Path("/proc")
LISTEN = "0A"  # the TCP state column of /proc/net/tcp


class PortInUse(LifecycleError):
    """A port `lifecycle up` needs is already bound by another process."""


@dataclass(frozen=True)
class PlannedPort:
    host: str
    port: int
    role: str
    setting: str

    def label(self) -> str:
        return f"port {self.port} ({self.role}, {self.setting})"


def planned_ports(settings: Settings, *, airflow: bool = False) -> list[PlannedPort]:
    """The ports `up` binds: Airflow's only when it starts Airflow."""
    ports = []
    if settings.tracking_uri is None:
        ports.append(
            PlannedPort(
                settings.tracking_host,
                settings.tracking_port,
                "MLflow tracking server",
                "LIFECYCLE_TRACKING_PORT",
            )
        )
    ports.append(
        PlannedPort(settings.api_host, settings.api_port, "scoring API", "LIFECYCLE_API_PORT")
    )
    ports.append(PlannedPort(settings.ui_host, settings.ui_port, "UI", "LIFECYCLE_UI_PORT"))
    if settings.worker_metrics_port:
        ports.append(
            PlannedPort(
                settings.worker_metrics_host,
                settings.worker_metrics_port,
                "worker metrics",
                "LIFECYCLE_WORKER_METRICS_PORT",
            )
        )
    if airflow:
        ports.append(
            PlannedPort(
                settings.airflow_host,
                settings.airflow_port,
                "Airflow API server",
                "LIFECYCLE_AIRFLOW_PORT",
            )
        )
        # The scheduler's log server, which the API server reads task logs from.
        ports.append(
            PlannedPort(
                "0.0.0.0",
                settings.airflow_log_port,
                "Airflow task log server",
                "LIFECYCLE_AIRFLOW_LOG_PORT",
            )
        )
    return ports


def check_ports_free(ports: list[PlannedPort]) -> None:
    """Raise PortInUse for the first port that is configured twice or cannot be bound."""
    seen: dict[int, PlannedPort] = {}
    for planned in ports:
        other = seen.setdefault(planned.port, planned)
        if other is not planned:
            raise PortInUse(f"{planned.label()} is also configured for {other.role}")
        if not _can_bind(planned.host, planned.port):
            raise PortInUse(f"{planned.label()} is in use{_holder_suffix(planned.port)}")


def _can_bind(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR too: a port in TIME_WAIT after the last `up` is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise PortInUse(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return True


def _holder_suffix(port: int) -> str:
    holder = port_holder(port)
    if holder is None:
        return ""
    pid, command = holder
    return f" by pid {pid} ({command})" if command else f" by pid {pid}"


def port_holder(port: int) -> tuple[int, str] | None:
    """The pid and command line of a process with a TCP socket bound to `port`, if visible."""
    inodes = _socket_inodes(port)
    if not inodes:
        return None
    for fd_dir in PROC.glob("[0-9]*/fd"):
        try:
            links = {os.readlink(fd) for fd in fd_dir.iterdir()}
        except OSError:  # the process exited, or belongs to another user
            continue
        if links & inodes:
            pid = int(fd_dir.parent.name)
            return pid, _command_line(pid)
    return None


def _socket_inodes(port: int) -> set[str]:
    """Inodes of the sockets bound to `port`: the listening ones when there are any."""
    listening: set[str] = set()
    bound: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEXIP:HEXPORT; inode 0 marks a socket no process owns (TIME_WAIT).
            if int(fields[1].rsplit(":", 1)[1], 16) != port or fields[9] == "0":
                continue
            inode = f"socket:[{fields[9]}]"
            (listening if fields[3] == LISTEN else bound).add(inode)
    return listening or bound


def _command_line(pid: int, limit: int = 80) -> str:
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return ""
    words[0] = Path(words[0]).name
    # Arguments may hold newlines (python -c): the error must stay one line.
    line = " ".join(" ".join(words).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."

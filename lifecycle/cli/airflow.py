"""The embedded Airflow of `lifecycle up` (and of the tests, through the same code).

`airflow db migrate` runs once, to completion (it writes airflow.cfg on first use, with the
JWT secret the API server and the scheduler's task runners must share), then the services of
pipelines.airflow_env.SERVICES start as supervised children, each in its own session: a stop
reaches the LocalExecutor's workers and the task processes too.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from lifecycle.cli.startup import StartupFailed, wait_http
from lifecycle.cli.supervisor import Supervisor
from lifecycle.core.settings import Settings
from pipelines.airflow_env import (
    ADMIN_USER,
    HEALTH_PATH,
    SERVICES,
    admin_password,
    airflow_bin,
    airflow_env,
    airflow_url,
    ensure_database,
)

# What must report healthy before the DAGs run: the triggerer is not started (no DAG defers).
HEALTHY_PARTS = ("metadatabase", "scheduler", "dag_processor")


@dataclass(frozen=True)
class AirflowLogin:
    url: str
    username: str
    password: str


class EmbeddedAirflow:
    """Resolved before anything starts: a missing Airflow virtualenv is a ConfigError naming
    LIFECYCLE_AIRFLOW_VENV, raised while nothing needs stopping yet."""

    def __init__(
        self, settings: Settings, base_env: dict[str, str], project_python: str = sys.executable
    ) -> None:
        self.command = str(airflow_bin(settings))
        self.env = airflow_env(settings, base_env, project_python)
        self.url = airflow_url(settings)

    def migrate(self, log_dir: Path) -> None:
        """Create (PostgreSQL) and migrate the metadata database, to completion: a failure is
        StartupFailed naming the log."""
        url = self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        try:
            ensure_database(url)
        except Exception as exc:  # psycopg2's errors, which this module does not import
            safe = make_url(url).render_as_string(hide_password=True)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StartupFailed(f"Airflow's database {safe}: {first}") from exc
        Path(self.env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / "airflow-migrate.log"
        with log.open("ab") as out:
            # Its own session: Ctrl-C reaches `up` only, which stops after this short step.
            migrate = subprocess.run(
                [self.command, "db", "migrate"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                check=False,
            )
        if migrate.returncode != 0:
            raise StartupFailed(
                f"airflow db migrate exited with code {migrate.returncode}; see {log}"
            )

    def start(self, supervisor: Supervisor) -> None:
        """The services, on a migrated database (no wait)."""
        if supervisor.stopping.is_set():
            raise KeyboardInterrupt
        for service in SERVICES:
            supervisor.start(f"airflow-{service}", [self.command, service], self.env)

    def wait_ready(self, supervisor: Supervisor, timeout: float = 180.0) -> AirflowLogin:
        """Until the API server answers and reports the scheduler and DAG processor healthy;
        then the admin login (the API server writes a missing password on its first start)."""
        wait_http(supervisor, f"{self.url}{HEALTH_PATH}", timeout, ready=_all_healthy)
        return AirflowLogin(self.url, ADMIN_USER, admin_password(self.env))


def _all_healthy(response: httpx.Response) -> bool:
    try:
        health = response.json()
        return all(health[part]["status"] == "healthy" for part in HEALTHY_PARTS)
    except (ValueError, KeyError, TypeError):
        return False

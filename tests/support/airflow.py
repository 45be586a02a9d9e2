"""Airflow as `lifecycle up` runs it (lifecycle.cli.airflow: migrate, the three services, the
health wait), for tests: on free ports, with its home under the test's folder, and a REST
client for its API (token, trigger a DAG run, wait for it, read a task's log).

Its metadata database is a fresh PostgreSQL database (dropped afterwards) when the settings'
database_url is PostgreSQL, else SQLite under the test's folder: runs of an earlier test never
show up in a later one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy.engine import make_url

from lifecycle.cli.airflow import AirflowLogin, EmbeddedAirflow
from lifecycle.cli.supervisor import Supervisor
from lifecycle.core.settings import Settings
from tests.support.services import free_port, temp_database

FINISHED = {"success", "failed"}
API = "/api/v2"


@dataclass
class AirflowApi:
    """Airflow's REST API as its admin (the login `up` prints)."""

    login: AirflowLogin
    _token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.login.url

    def token(self) -> str:
        """A JWT for the admin, as a client of Airflow's API gets one (cached)."""
        if self._token is None:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={"username": self.login.username, "password": self.login.password},
                timeout=30,
            )
            assert response.is_success, f"{response.status_code}: {response.text}"
            self._token = str(response.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to Airflow's REST API as the admin; `path` under /api/v2 ("/dags") unless it
        names its own prefix ("/api/v2/...", "/auth/...")."""
        full = path if path.startswith(("/api/", "/auth/")) else f"{API}{path}"
        headers = {"authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        return httpx.request(method, f"{self.url}{full}", headers=headers, **kwargs)

    def dag_ids(self) -> list[str]:
        response = self.api("GET", "/dags", params={"limit": 100})
        assert response.status_code == 200, response.text
        return sorted(d["dag_id"] for d in response.json()["dags"])

    def wait_dags(self, *dag_ids: str, timeout: float = 120) -> None:
        """Until the DAG processor has parsed each of `dag_ids` (import errors end the wait)."""
        deadline = time.monotonic() + timeout
        while not set(dag_ids) <= set(self.dag_ids()):
            errors = self.api("GET", "/importErrors").json().get("import_errors", [])
            assert not errors, f"DAG import errors: {errors}"
            assert time.monotonic() < deadline, f"{dag_ids} not parsed; found {self.dag_ids()}"
            time.sleep(1)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """A manual run of `dag_id` (once parsed) with `conf`; its run id."""
        self.wait_dags(dag_id)
        response = self.api(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause `dag_id` (once parsed)."""
        self.wait_dags(dag_id)
        response = self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})
        assert response.status_code == 200, response.text

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        response = self.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """The run's final state ('success' or 'failed'); AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while (state := self.run(dag_id, run_id)["state"]) not in FINISHED:
            assert time.monotonic() < deadline, f"{dag_id} {run_id} still {state}"
            time.sleep(1)
        return str(state)

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of `dag_id`, oldest first."""
        response = self.api(
            "GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "run_after", "limit": 100}
        )
        assert response.status_code == 200, response.text
        return list(response.json()["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """task id -> state of one run."""
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        response = self.api("GET", path)
        assert response.status_code == 200, response.text
        return {ti["task_id"]: ti["state"] for ti in response.json()["task_instances"]}

    def explain(self, dag_id: str, run_id: str) -> str:
        """Task states of a run and the logs of its failed tasks: an assertion's message."""
        states = self.task_instances(dag_id, run_id)
        parts = [f"{dag_id} {run_id}: {states}"]
        for task_id, state in states.items():
            if state == "failed":
                parts.append(f"--- {task_id} ---\n{self.task_log(dag_id, run_id, task_id)}")
        return "\n".join(parts)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A task's log as text (Airflow's structured events, one message a line)."""
        path = (
            f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/logs/{try_number}"
        )
        response = self.api("GET", path, params={"full_content": "true"})
        assert response.status_code == 200, response.text
        content = response.json()["content"]
        if isinstance(content, str):
            return content
        return "\n".join(_log_line(event) for event in content)


@dataclass
class AirflowServices(AirflowApi):
    supervisor: Supervisor = field(kw_only=True)
    home: Path = field(kw_only=True)
    logs: Path = field(kw_only=True)
    # The `airflow` command and the environment its services run with.
    command: str = field(kw_only=True)
    env: dict[str, str] = field(kw_only=True, repr=False)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`airflow *args` against this Airflow: cli("dags", "list-import-errors")."""
        return subprocess.run(
            [self.command, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _log_line(event: Any) -> str:
    # Each event also carries the task's identity and source line: noise in an assertion.
    if not isinstance(event, dict):
        return str(event)
    return f"{event.get('level', '')} {event.get('event', '')}".strip()


@contextmanager
def airflow_services(
    settings: Settings,
    env_base: dict[str, str],
    workdir: Path,
    *,
    dags_folder: Path | None = None,
    paused: bool = False,
    timeout: float = 180,
) -> Iterator[AirflowServices]:
    """Airflow's API server, scheduler and DAG processor, ready; every process (task
    processes included) stopped on exit. `env_base` is the environment the tasks read their
    LIFECYCLE_* settings from; `dags_folder` replaces pipelines/dags (experiments only).

    As `up` runs them, the DAGs start unpaused, and a scheduled DAG runs its latest interval
    at once; `paused=True` keeps every DAG paused until `set_paused(dag_id, False)`."""
    with ExitStack() as stack:
        update: dict[str, Any] = {
            "airflow_home": workdir / "airflow",
            "airflow_port": free_port(),
            "airflow_log_port": free_port(),
        }
        database = settings.database_url
        on_postgres = database is not None and make_url(database).get_backend_name() == "postgresql"
        if settings.airflow_database_url is None and on_postgres:
            url = make_url(stack.enter_context(temp_database("lc_airflow")))
            psycopg2 = url.set(drivername="postgresql+psycopg2")
            update["airflow_database_url"] = psycopg2.render_as_string(hide_password=False)
        settings = settings.model_copy(update=update)
        airflow = EmbeddedAirflow(settings, env_base)
        if dags_folder is not None:
            airflow.env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
        if paused:
            airflow.env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "True"
        logs = workdir / "airflow-logs"
        supervisor = Supervisor(logs)
        # Registered before the start: a failed start stops what did start, before the
        # database is dropped.
        stack.callback(supervisor.stop_all)
        airflow.migrate(logs)
        airflow.start(supervisor)
        login = airflow.wait_ready(supervisor, timeout)
        home = settings.resolved_airflow_home()
        yield AirflowServices(
            login,
            supervisor=supervisor,
            home=home,
            logs=logs,
            command=airflow.command,
            env=airflow.env,
        )

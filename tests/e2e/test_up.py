"""`lifecycle up`: the whole embedded stack on one machine, no servers installed, no RabbitMQ.

The e2e package's one `up` (tests/e2e/conftest.py; it trains a model on first start), checked
as a user meets it: the printed URLs answer (the UI among them), REST and async scoring serve
the bootstrapped Production model, Airflow answers with the printed login and lists the
pipelines' DAGs, and Ctrl-C (SIGTERM here) stops every child, Airflow's processes included:
that test is the last to use it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from lifecycle.cli.airflow import AirflowLogin
from tests.support.airflow import AirflowApi
from tests.support.up import UpProcess
from tests.support.worker import wait_task

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
DAGS = ["batch_scoring", "drift_check", "retrain"]


def _airflow_login(up: UpProcess) -> AirflowLogin:
    """The Airflow line `up` printed: its URL and the admin's login."""
    url = up.urls["Airflow (pipelines)"]
    match = re.search(r"Airflow \(pipelines\)\s+\S+\s+\(login (\S+) / (\S+)\)", up.text())
    assert match, up.text()
    return AirflowLogin(url, match.group(1), match.group(2))


def _airflow_processes(home: Path) -> list[str]:
    """Live processes started with this AIRFLOW_HOME (Airflow retitles its processes, so
    their command lines do not name it): pid and command line of each."""
    marker = f"AIRFLOW_HOME={home}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in environ and stat[0] != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_up_serves_rest_and_async(shared_up: UpProcess) -> None:
    up, home = shared_up, shared_up.data_dir
    # lifecycle_up's environment carries no LIFECYCLE_BROKER_URL: the default is embedded.
    mlflow_url = up.urls["MLflow UI and registry"]
    api = up.urls["scoring API"]
    ui = up.urls["Lifecycle UI"]
    assert "broker sqla+sqlite:///" in up.text()
    assert httpx.get(f"{ui}/_stcore/health", timeout=5).text == "ok"
    assert httpx.get(f"{mlflow_url}/health", timeout=5).status_code == 200
    client = MlflowClient(mlflow_url)
    (found,) = client.search_model_versions("name = 'iris-classifier'")
    version = client.get_model_version("iris-classifier", found.version)
    assert (version.version, version.current_stage) == ("1", "Production")
    assert version.aliases == ["production"]
    assert (home / "mlflow.db").is_file()

    with httpx.Client(base_url=api, timeout=30) as http:
        # No wait: `up` prints its URLs only once the API has a model loaded.
        answer = http.post("/predict", json={"features": IRIS_ROW})
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] == "setosa"
        assert answer.json()["model"]["version"] == "1"

        started = time.monotonic()
        response = http.post("/predict/async", json={"features": IRIS_ROW})
        assert response.status_code == 202, response.text
        done = wait_task(http, response.headers["location"].rsplit("/", 1)[1], timeout=90)
        assert done["result"]["label"] == "setosa"
        assert done["result"]["model"]["version"] == "1"
        assert time.monotonic() - started < 90

        # Reports are Airflow's drift_check DAG's to schedule now: `up` runs no loop of its
        # own, and prints where the reports are served.
        assert up.urls["drift reports"] == f"{api}/reports"
        assert "drift_check DAG, hourly" in up.text()
        assert http.get("/reports").status_code == 200
    assert (home / "broker.db").is_file()


def test_up_runs_airflow_with_the_pipelines_dags(shared_up: UpProcess) -> None:
    login = _airflow_login(shared_up)
    assert login.username == "admin"
    assert login.url.startswith("http://127.0.0.1:")
    health = httpx.get(f"{login.url}/api/v2/monitor/health", timeout=10).json()
    assert health["scheduler"]["status"] == "healthy", health
    assert health["dag_processor"]["status"] == "healthy", health
    # The API refuses a caller without a token: the printed password is what opens it.
    assert httpx.get(f"{login.url}/api/v2/dags", timeout=10).status_code == 401
    refused = httpx.post(
        f"{login.url}/auth/token",
        json={"username": login.username, "password": login.password + "x"},
        timeout=10,
    )
    assert refused.status_code == 401
    airflow = AirflowApi(login)
    airflow.wait_dags(*DAGS)
    dags = {d["dag_id"]: d for d in airflow.api("GET", "/dags").json()["dags"]}
    assert sorted(dags) == DAGS
    # Unpaused from the start: their schedules run with no click in the UI.
    assert not any(d["is_paused"] for d in dags.values()), dags
    # The embedded metadata database is SQLite in the data directory (no PostgreSQL here).
    assert (shared_up.data_dir / "airflow" / "airflow.db").is_file()


def test_ctrl_c_stops_every_child(shared_up: UpProcess) -> None:
    """Last user of the package's `up`."""
    urls = shared_up.urls
    airflow_home = shared_up.data_dir / "airflow"
    assert _airflow_processes(airflow_home), "the scan finds no Airflow process of this up"
    shared_up.stop()
    assert shared_up.process.returncode == 0, shared_up.text()
    assert "stopping" in shared_up.text()
    mlflow_url, api, ui = urls["MLflow UI and registry"], urls["scoring API"], urls["Lifecycle UI"]
    airflow = urls["Airflow (pipelines)"]
    for url in (
        f"{mlflow_url}/health",
        f"{api}/health",
        f"{ui}/_stcore/health",
        f"{airflow}/api/v2/monitor/health",
    ):
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=2)
    # Airflow's scheduler forks LocalExecutor workers, its log server and task processes
    # (each in a process group of its own): none may outlive `up`.
    assert _airflow_processes(airflow_home) == []

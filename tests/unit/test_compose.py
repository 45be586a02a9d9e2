"""compose.yaml: valid, secrets without defaults, and the same commands the native stack runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifecycle.core.settings import PROJECT_ROOT, Settings
from pipelines.airflow_env import (
    DAGS_FOLDER,
    MLFLOW_CONN_ID,
    SERVICES,
    airflow_bin,
    airflow_env,
)
from tests.support.cli import cli_env, run_cli
from tests.support.services import REQUIRE_ENV

SECRETS = (
    "POSTGRES_PASSWORD",
    "RABBITMQ_PASSWORD",
    "LIFECYCLE_ADMIN_TOKEN",
    "LIFECYCLE_WEBHOOK_SECRET",
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
    "GRAFANA_ADMIN_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_FERNET_KEY",
)
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
)


def _compose(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = "compose validation needs docker-compose (apt-get install docker-compose)"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        [binary, "-f", str(PROJECT_ROOT / "compose.yaml"), "config"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    result = _compose({name: f"test-{name.lower()}" for name in SECRETS})
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout))


def test_compose_is_valid_and_refuses_to_start_without_each_secret() -> None:
    for missing in SECRETS:
        env = {name: "x" for name in SECRETS if name != missing}
        result = _compose(env)
        assert result.returncode != 0, f"compose accepted a missing {missing}"
        assert missing in result.stderr


def test_secrets_come_only_from_the_environment(rendered: dict[str, Any]) -> None:
    text = (PROJECT_ROOT / "compose.yaml").read_text()
    for name in SECRETS:
        assert f"${{{name}:?" in text
    api_env = rendered["services"]["api"]["environment"]
    assert api_env["LIFECYCLE_ADMIN_TOKEN"] == "test-lifecycle_admin_token"


def test_mounted_configuration_files_exist(rendered: dict[str, Any]) -> None:
    for service in rendered["services"].values():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith(("/", ".")):
                assert Path(source).exists(), f"{source} is mounted but missing"


def test_lifecycle_services_run_existing_cli_commands(rendered: dict[str, Any]) -> None:
    commands = [
        s["command"] for s in rendered["services"].values() if s.get("image") == "lifecycle:latest"
    ]
    assert len(commands) >= 2
    for command in commands:
        assert command[0] == "lifecycle"
        result = run_cli(*command[1:2], "--help", env=cli_env())
        assert result.returncode == 0, f"{command}: {result.stderr}"


def test_ui_service_runs_the_ui_command_with_no_secret(rendered: dict[str, Any]) -> None:
    ui = rendered["services"]["ui"]
    assert ui["command"][:2] == ["lifecycle", "ui"]
    # The UI reaches the API over the compose network and holds no database URL or token:
    # users type the admin token for each admin action.
    env = ui["environment"]
    assert env["LIFECYCLE_API_URL"] == "http://api:8000"
    assert not {"LIFECYCLE_DATABASE_URL", "LIFECYCLE_ADMIN_TOKEN"} & set(env)
    assert not any(value.startswith("test-") for value in env.values())
    assert {p["target"] for p in ui["ports"]} == {8501}


def test_airflow_services_set_what_the_embedded_airflow_sets(rendered: dict[str, Any]) -> None:
    # One definition of Airflow's configuration (pipelines/airflow_env.py): compose sets the
    # same variables, with compose's addresses where those differ.
    embedded = airflow_env(Settings(), {"PATH": "/usr/bin"}, "/usr/local/bin/python")
    expected = {k for k in embedded if k.startswith("AIRFLOW")} | {"LIFECYCLE_PROJECT_PYTHON"}
    same_value = (
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
        "AIRFLOW__CORE__PARALLELISM",
    )
    services = rendered["services"]
    for name in AIRFLOW_SERVICES:
        service = services[name]
        env = service["environment"]
        assert service["image"] == "lifecycle-airflow:latest"
        assert service["build"]["target"] == "airflow"
        assert expected <= set(env), f"{name} lacks {sorted(expected - set(env))}"
        assert {k: env[k] for k in same_value} == {k: embedded[k] for k in same_value}
        dags = Path(env["AIRFLOW__CORE__DAGS_FOLDER"]).relative_to("/app")
        assert dags == DAGS_FOLDER.relative_to(PROJECT_ROOT)
        assert env[f"AIRFLOW_CONN_{MLFLOW_CONN_ID.upper()}"] == "http://mlflow:5000"
        # The tasks read Lifecycle's settings as the other services have them.
        for key, value in services["worker"]["environment"].items():
            if key.startswith("LIFECYCLE_") and "METRICS" not in key:
                assert env[key] == value, key
        assert env["LIFECYCLE_API_URL"] == "http://api:8000"
        # Task runners (scheduler) and the API server meet on one execution API and secret.
        execution = env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
        assert execution == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "test-airflow_jwt_secret"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(
            "@postgres:5432/lifecycle_airflow"
        )
    # The services `lifecycle up` supervises, plus the one-shot migration before them.
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands["airflow-init"] == ["airflow", "db", "migrate"]
    assert services["airflow-init"]["restart"] == "no"
    assert commands["airflow-scheduler"] == ["airflow", "scheduler"]
    assert commands["airflow-dag-processor"] == ["airflow", "dag-processor"]
    assert commands["airflow-apiserver"][-1].endswith("&& exec airflow api-server")
    assert len(SERVICES) == 3
    for name in AIRFLOW_SERVICES[1:]:
        after = services[name]["depends_on"]["airflow-init"]["condition"]
        assert after == "service_completed_successfully"
        assert "healthcheck" in services[name]
    assert {p["target"] for p in services["airflow-apiserver"]["ports"]} == {8080}
    # Its metadata database is created with the others on the compose PostgreSQL.
    init = (PROJECT_ROOT / "conf/postgres/init.sql").read_text()
    assert "CREATE DATABASE lifecycle_airflow OWNER lifecycle;" in init


def test_airflow_services_run_existing_airflow_commands(rendered: dict[str, Any]) -> None:
    # Checked with the Airflow `make airflow` builds from the image's own requirement files.
    airflow = str(airflow_bin(Settings()))
    commands = {}
    for name in AIRFLOW_SERVICES:
        command = rendered["services"][name]["command"]
        # ["airflow", ...], or a shell step that ends in `exec airflow ...`.
        is_direct = command[0] == "airflow"
        commands[name] = command[1:] if is_direct else command[-1].split("exec airflow")[1].split()
    # In parallel: each `airflow ... --help` imports Airflow (seconds).
    runs = {
        name: subprocess.Popen(
            [airflow, *command, "--help"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, command in commands.items()
    }
    for name, run in runs.items():
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, f"{name}: airflow {commands[name]}: {stderr}"


def test_airflow_admin_password_comes_from_the_environment(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    api_server = rendered["services"]["airflow-apiserver"]
    env = api_server["environment"]
    assert env["AIRFLOW_ADMIN_PASSWORD"] == "test-airflow_admin_password"
    others = [rendered["services"][n]["environment"] for n in AIRFLOW_SERVICES if "api" not in n]
    assert not any("AIRFLOW_ADMIN_PASSWORD" in other for other in others)
    # The API server's start writes Airflow's passwords file from it (then execs Airflow):
    # run that step here with `airflow` replaced by a look at the file.
    passwords = tmp_path / "home" / "passwords.json"
    script = api_server["command"][-1].replace("exec airflow api-server", f"cat {passwords}")
    result = subprocess.run(
        [*api_server["command"][:-1], script],
        env={
            "PATH": os.environ["PATH"],
            "AIRFLOW_HOME": str(passwords.parent),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW_ADMIN_PASSWORD": 'a "quoted" secret',
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"admin": 'a "quoted" secret'}


def test_one_place_schedules_work(rendered: dict[str, Any]) -> None:
    # The drift reports are the drift_check DAG's: no service runs a report loop.
    assert "reports" not in rendered["services"]
    for service in rendered["services"].values():
        command = service.get("command") or []
        assert "--every" not in command, command


def test_grafana_dashboard_is_consistent() -> None:
    # Grafana loads a broken or overlapping dashboard silently wrong, so check what it cannot.
    dashboard = json.loads((PROJECT_ROOT / "conf/grafana/dashboards/lifecycle.json").read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} is wider than the grid"
        taken = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not taken & cells, f"{panel['title']} overlaps another panel"
        cells |= taken
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    titles = [p["title"] for p in panels if p["type"] == "row"]
    assert "Drift" in titles

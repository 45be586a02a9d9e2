"""The embedded Airflow's configuration as `lifecycle up` resolves it, before anything starts:
a missing virtualenv is one line naming its setting, the admin's password comes from Airflow's
own passwords file, and Airflow's ports join up's port check only when Airflow starts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lifecycle.cli.ports import planned_ports
from lifecycle.core.errors import ConfigError
from lifecycle.core.settings import Settings
from pipelines.airflow_env import admin_password, airflow_env, passwords_file
from tests.support.cli import assert_one_line_error, cli_env, run_cli
from tests.support.services import free_port


def test_up_without_the_airflow_venv_names_the_setting_and_starts_nothing(
    tmp_path: Path,
) -> None:
    ports = {
        name: str(free_port())
        for name in (
            "LIFECYCLE_TRACKING_PORT",
            "LIFECYCLE_API_PORT",
            "LIFECYCLE_UI_PORT",
            "LIFECYCLE_WORKER_METRICS_PORT",
            "LIFECYCLE_AIRFLOW_PORT",
            "LIFECYCLE_AIRFLOW_LOG_PORT",
        )
    }
    missing = tmp_path / "no-airflow-here"
    env = cli_env(
        LIFECYCLE_DATA_DIR=str(tmp_path / "home"),
        LIFECYCLE_AIRFLOW_VENV=str(missing),
        **ports,
    )
    result = run_cli("up", env=env, timeout=60)
    assert_one_line_error(
        result,
        f"error: Airflow is not installed at {missing} (LIFECYCLE_AIRFLOW_VENV)",
        "make airflow",
        "--no-airflow",
    )
    assert result.returncode == 2
    assert not (tmp_path / "home" / "logs").exists()


def test_admin_password_is_read_from_airflows_passwords_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, airflow_home=tmp_path / "airflow")
    env = airflow_env(settings, {"PATH": "/usr/bin"}, sys.executable)
    generated = passwords_file(env)
    assert generated == tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated"
    with pytest.raises(ConfigError, match="cannot read Airflow's passwords file"):
        admin_password(env)
    generated.parent.mkdir(parents=True)
    generated.write_text(json.dumps({"someone": "else"}))
    with pytest.raises(ConfigError, match="has no 'admin' entry"):
        admin_password(env)
    generated.write_text(json.dumps({"admin": "generated-one"}) + "\n")
    assert admin_password(env) == "generated-one"

    # A file the user names with Airflow's own setting holds the password they chose.
    chosen = tmp_path / "passwords.json"
    chosen.write_text(json.dumps({"admin": "chosen-one"}))
    env = airflow_env(
        settings,
        {"PATH": "/usr/bin", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(chosen)},
        sys.executable,
    )
    assert admin_password(env) == "chosen-one"


def test_airflow_env_runs_tasks_with_the_project_python_and_a_small_executor(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, airflow_port=18080, airflow_log_port=18793)
    env = airflow_env(settings, {"PATH": "/usr/bin", "LIFECYCLE_X": "1"}, "/project/python")
    assert env["LIFECYCLE_PROJECT_PYTHON"] == "/project/python"
    assert env["LIFECYCLE_X"] == "1"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # Tasks report to the execution API of this API server, not Airflow's default :8080.
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18793"
    assert env["PATH"].split(":")[0] == str(settings.airflow_venv / "bin")
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    chosen = airflow_env(settings, {"AIRFLOW__CORE__PARALLELISM": "8"}, "/project/python")
    assert chosen["AIRFLOW__CORE__PARALLELISM"] == "8"


def test_airflow_ports_are_checked_only_when_airflow_starts(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, airflow_port=18080, airflow_log_port=18793)
    without = {p.setting for p in planned_ports(settings)}
    with_airflow = {p.port: p.setting for p in planned_ports(settings, airflow=True)}
    assert not {"LIFECYCLE_AIRFLOW_PORT", "LIFECYCLE_AIRFLOW_LOG_PORT"} & without
    assert with_airflow[18080] == "LIFECYCLE_AIRFLOW_PORT"
    assert with_airflow[18793] == "LIFECYCLE_AIRFLOW_LOG_PORT"


def test_lifecycle_airflow_runs_airflow_with_the_embedded_configuration(tmp_path: Path) -> None:
    env = cli_env(LIFECYCLE_DATA_DIR=str(tmp_path), LIFECYCLE_AIRFLOW_PORT="18081")
    result = run_cli("airflow", "config", "get-value", "api", "port", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "18081"
    result = run_cli(
        "airflow", "config", "get-value", "database", "sql_alchemy_conn", env=env, timeout=120
    )
    assert result.stdout.strip() == f"sqlite:///{tmp_path.resolve() / 'airflow' / 'airflow.db'}"
    missing = run_cli(
        "airflow", "version", env={**env, "LIFECYCLE_AIRFLOW_VENV": str(tmp_path / "none")}
    )
    assert_one_line_error(missing, "(LIFECYCLE_AIRFLOW_VENV)")

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

from lifecycle.core.settings import PROJECT_ROOT
from tests.support.cli import cli_env, run_cli
from tests.support.services import REQUIRE_ENV

SECRETS = (
    "POSTGRES_PASSWORD",
    "RABBITMQ_PASSWORD",
    "LIFECYCLE_ADMIN_TOKEN",
    "LIFECYCLE_WEBHOOK_SECRET",
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
    "GRAFANA_ADMIN_PASSWORD",
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

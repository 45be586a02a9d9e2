"""Every DAG imports in Airflow's own environment, with the schedule and tasks it documents,
and calls MLflow only through airflow-provider-mlflow's hook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lifecycle.core.settings import Settings
from tests.support.dags import DagEnv

EXTERNAL = "_PythonExternalDecoratedOperator"
# Ways to reach an HTTP API other than the provider's hook: none may appear in a DAG file.
HTTP_CLIENTS = ("mlflow", "requests", "httpx", "urllib", "http.client", "aiohttp")
LIFECYCLE_PACKAGES = ("pipelines", "lifecycle", "serving", "reports", "registry", "training", "ui")


@pytest.fixture(scope="module")
def dags(tmp_path_factory: pytest.TempPathFactory) -> DagEnv:
    env = DagEnv(tmp_path_factory.mktemp("airflow"), Settings(), {})
    env.migrate()
    return env


@pytest.fixture(scope="module")
def described(dags: DagEnv) -> dict[str, Any]:
    return dags.describe()


def test_airflow_reports_no_import_error(dags: DagEnv) -> None:
    proc = dags.airflow_command("dags", "list-import-errors", "--local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No data found" in proc.stdout
    listed = dags.airflow_command("dags", "list", "--local", "--output", "plain")
    assert listed.returncode == 0, listed.stderr
    for dag_id in ("batch_scoring", "drift_check", "retrain"):
        assert dag_id in listed.stdout


def test_schedules(described: dict[str, Any]) -> None:
    assert described["import_errors"] == {}
    dags = described["dags"]
    assert set(dags) == {"batch_scoring", "drift_check", "retrain"}
    assert dags["batch_scoring"]["schedule"] == "*/30 * * * *"
    assert dags["drift_check"]["schedule"] == "@hourly"
    assert dags["retrain"]["timetable"] == "NullTimetable"  # triggered by drift_check
    for dag in dags.values():
        assert dag["catchup"] is False
        assert dag["max_active_runs"] == 1


def test_tasks_and_order(described: dict[str, Any]) -> None:
    dags = described["dags"]
    batch = dags["batch_scoring"]
    assert batch["tasks"] == {
        "context": EXTERNAL,
        "claim": EXTERNAL,
        "score": "DecoratedMappedOperator",
        "record": "_PythonDecoratedOperator",
    }
    assert batch["downstream"]["claim"] == ["score"]
    assert batch["downstream"]["score"] == ["record"]

    drift = dags["drift_check"]
    assert drift["tasks"] == {
        "report": EXTERNAL,
        "needs_retrain": "_ShortCircuitDecoratedOperator",
        "trigger_retrain": "TriggerDagRunOperator",
    }
    assert drift["downstream"]["report"] == ["needs_retrain"]
    assert drift["downstream"]["needs_retrain"] == ["trigger_retrain"]

    retrain = dags["retrain"]
    external = {t for t, kind in retrain["tasks"].items() if kind == EXTERNAL}
    assert external == {
        "context",
        "training_set",
        "train_and_promote",
        "wait_served",
        "first_prediction",
    }
    down = retrain["downstream"]
    assert down["training_set"] == ["train_and_promote"]
    assert down["train_and_promote"] == ["lineage"]
    assert "wait_served" in down["lineage"]
    assert down["wait_served"] == ["first_prediction"]
    assert down["first_prediction"] == ["record_first"]


def test_mlflow_only_through_the_provider_hook(described: dict[str, Any]) -> None:
    imports = {Path(f).name: mods for f, mods in described["imports"].items()}
    assert set(imports) == {
        "batch_scoring.py",
        "drift_check.py",
        "retrain.py",
        "lifecycle_common.py",
    }
    for name, where in imports.items():
        for module in where["module"] + where["functions"]:
            root = module.split(".")[0]
            assert root not in HTTP_CLIENTS and module not in HTTP_CLIENTS, (name, module)
            if root in LIFECYCLE_PACKAGES:
                # Lifecycle's code runs in the project's interpreter: imported only inside
                # the external_python bodies, never when Airflow parses the file.
                assert module == "pipelines.tasks", (name, module)
                assert module not in where["module"], (name, module)
    assert "mlflow_provider.hooks.client" in imports["lifecycle_common.py"]["module"]
    for dag_file in ("batch_scoring.py", "drift_check.py", "retrain.py"):
        assert "lifecycle_common" in imports[dag_file]["module"]
        assert "pipelines.tasks" in imports[dag_file]["functions"]

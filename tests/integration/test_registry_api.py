"""Registry actions and batch downloads over HTTP, on the real stack: `lifecycle serve` and
`lifecycle worker` on RabbitMQ, MLflow on PostgreSQL, iris v1 in Production.

Tests run in file order: the promotion moves Production to v2 and the rollback returns it to
v1, and each checks what the API then serves.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lifecycle.core.settings import PROJECT_ROOT
from tests.support.stack import FEATURES, Stack, iris_frame
from tests.support.worker import wait_task
from training.train import TrainRequest, TrainResult, train

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

GATES = {"loads", "signature", "quality", "minimum"}


@dataclass(frozen=True)
class Versions:
    good: TrainResult  # the configured estimator again: passes every gate against v1
    weak: TrainResult  # C=0.01: the quality gate refuses it


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    # Gates download and score both models: longer than a scoring call.
    with httpx.Client(base_url=stack.api.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def versions(stack: Stack) -> Versions:
    good = train(stack.settings, TrainRequest(dataset="iris", register=True, model_name=stack.name))
    weak = train(
        stack.settings,
        TrainRequest(dataset="iris", params={"C": 0.01}, register=True, model_name=stack.name),
    )
    assert (good.version, weak.version) == ("2", "3")
    return Versions(good, weak)


def _stages(stack: Stack) -> dict[str, str]:
    client = MlflowClient(stack.settings.resolved_tracking_uri())
    found = client.search_model_versions(f"name = '{stack.name}'")
    return {str(v.version): str(v.current_stage) for v in found}


def _alias(stack: Stack, alias: str) -> str | None:
    client = MlflowClient(stack.settings.resolved_tracking_uri())
    value = (client.get_registered_model(stack.name).aliases or {}).get(alias)
    return str(value) if value is not None else None


def _served(client: httpx.Client, version: str, timeout: float = 60) -> dict:
    """Until GET /model names `version` (the API follows the registry on its poll)."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = client.get("/model").json()
        if body.get("version") == version:
            return body
        time.sleep(0.2)
    raise AssertionError(f"API did not serve v{version} within {timeout}s: {body}")


def _cli_error(stack: Stack, *args: str) -> str:
    """The one line `lifecycle <args>` prints on failure, with the API's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_EXPERIMENT")}
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.run(
        [sys.executable, "-m", "lifecycle", *args],
        env={**env, **stack.env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr
    return lines[-1].removeprefix("error: ")


def test_registry_actions_refuse_without_or_with_a_wrong_token(
    stack: Stack, client: httpx.Client, versions: Versions
) -> None:
    bodies = {
        "/registry/gates": {"name": stack.name, "version": "2"},
        "/registry/promote": {"name": stack.name, "version": "2"},
        "/registry/rollback": {"name": stack.name},
    }
    for path, body in bodies.items():
        anonymous = client.post(path, json=body)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.json()["detail"].startswith("admin token required")
        wrong = client.post(path, json=body, headers={"authorization": "Bearer guess"})
        assert wrong.status_code == 403, wrong.text
        assert wrong.json() == {"detail": "admin token is wrong"}
    assert _stages(stack) == {"1": "Production", "2": "None", "3": "None"}


def test_gates_dry_run_evaluates_both_candidates_and_changes_nothing(
    stack: Stack, client: httpx.Client, versions: Versions
) -> None:
    good = client.post(
        "/registry/gates",
        json={"name": stack.name, "version": "2"},
        headers=stack.admin_headers(),
    )
    assert good.status_code == 200, good.text
    body = good.json()
    assert (body["name"], body["version"], body["stage"], body["passed"]) == (
        stack.name,
        "2",
        "Production",
        True,
    )
    gates = {g["name"]: g for g in body["gates"]}
    assert set(gates) == GATES
    assert all(g["passed"] and g["enforced"] for g in gates.values())
    quality = gates["quality"]["numbers"]
    assert quality["candidate"] == pytest.approx(versions.good.metrics["f1_macro"])
    assert quality["rows"] > 0 and "production" in quality
    assert gates["signature"]["detail"] == "inputs match Production"

    weak = client.post(
        "/registry/gates",
        json={"name": stack.name, "version": "3", "stage": "production"},
        headers=stack.admin_headers(),
    ).json()
    assert weak["passed"] is False and weak["stage"] == "Production"
    refused = [g["name"] for g in weak["gates"] if not g["passed"]]
    assert refused == ["quality"], weak
    # Nothing moved: a dry run writes no stage, alias or tag.
    assert _stages(stack) == {"1": "Production", "2": "None", "3": "None"}
    assert _alias(stack, "production") is None
    tags = MlflowClient(stack.settings.resolved_tracking_uri()).get_model_version(stack.name, "2")
    assert not any(key.startswith("lifecycle.") for key in tags.tags or {})


def test_a_refused_promotion_is_a_409_with_the_gate_table(
    stack: Stack, client: httpx.Client, versions: Versions
) -> None:
    refused = client.post(
        "/registry/promote",
        json={"name": stack.name, "version": "3", "reason": "try the weak one"},
        headers=stack.admin_headers(),
    )
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["detail"].startswith(f"{stack.name} v3 not promoted to Production: quality: ")
    gates = {g["name"]: g for g in body["gates"]}
    assert set(gates) == GATES
    assert gates["quality"]["passed"] is False and gates["quality"]["enforced"] is True
    assert gates["quality"]["numbers"]["candidate"] == pytest.approx(
        versions.weak.metrics["f1_macro"]
    )
    assert _stages(stack)["1"] == "Production" and _stages(stack)["3"] == "None"
    assert client.get("/model").json()["version"] == "1"


def test_registry_errors_are_the_clis(
    stack: Stack, client: httpx.Client, versions: Versions
) -> None:
    admin = stack.admin_headers()
    unknown_version = client.post(
        "/registry/promote", json={"name": stack.name, "version": "99"}, headers=admin
    )
    assert unknown_version.status_code == 404
    assert unknown_version.json()["detail"] == _cli_error(stack, "promote", stack.name, "99")
    assert unknown_version.json()["detail"] == f"model {stack.name} has no version 99"

    nosuch = f"nosuch-{uuid.uuid4().hex[:6]}"
    for path, body in [
        ("/registry/gates", {"name": nosuch, "version": "1"}),
        ("/registry/promote", {"name": nosuch, "version": "1"}),
        ("/registry/rollback", {"name": nosuch}),
    ]:
        missing = client.post(path, json=body, headers=admin)
        assert missing.status_code == 404, (path, missing.text)
        assert missing.json() == {"detail": f"registered model {nosuch} not found"}

    stage = client.post(
        "/registry/promote",
        json={"name": stack.name, "version": "2", "stage": "Prod"},
        headers=admin,
    )
    assert stage.status_code == 422
    detail = stage.json()["detail"]
    assert detail == "stage: invalid stage 'Prod'; expected one of Production, Staging"
    assert _cli_error(stack, "promote", stack.name, "2", "--stage", "Prod").startswith(
        "invalid stage 'Prod'; expected one of"
    )


def test_promotion_with_the_token_is_served(
    stack: Stack, client: httpx.Client, versions: Versions
) -> None:
    promoted = client.post(
        "/registry/promote",
        json={"name": stack.name, "version": "2", "reason": "retrained from the UI"},
        headers=stack.admin_headers(),
    )
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert {k: v for k, v in body.items() if k != "gates"} == {
        "action": "promote",
        "name": stack.name,
        "version": "2",
        "stage": "Production",
        "alias": "production",
        "previous_version": "1",
        "changed": True,
        "forced": False,
    }
    assert {g["name"] for g in body["gates"] if g["passed"]} == GATES
    assert _stages(stack) == {"1": "Archived", "2": "Production", "3": "None"}
    assert _alias(stack, "production") == "2"
    tags = MlflowClient(stack.settings.resolved_tracking_uri()).get_model_version(stack.name, "2")
    assert tags.tags["lifecycle.reason"] == "retrained from the UI"
    assert tags.tags["lifecycle.previous_version"] == "1"
    _served(client, "2")

    # Promoting what is already there changes nothing and says so.
    again = client.post(
        "/registry/promote",
        json={"name": stack.name, "version": "2"},
        headers=stack.admin_headers(),
    )
    assert again.status_code == 200 and again.json()["changed"] is False


def test_rollback_returns_production_to_v1_and_the_api_serves_it(
    stack: Stack, client: httpx.Client, versions: Versions
) -> None:
    back = client.post(
        "/registry/rollback",
        json={"name": stack.name, "reason": "v2 misbehaves"},
        headers=stack.admin_headers(),
    )
    assert back.status_code == 200, back.text
    body = back.json()
    assert (body["action"], body["version"], body["previous_version"], body["changed"]) == (
        "rollback",
        "1",
        "2",
        True,
    )
    gates = {g["name"]: g for g in body["gates"]}
    # A rollback records the quality gates without enforcing them.
    assert not gates["quality"]["enforced"] and gates["signature"]["enforced"]
    assert _stages(stack) == {"1": "Production", "2": "Archived", "3": "None"}
    assert _alias(stack, "production") == "1"
    _served(client, "1")

    # A model whose only version never replaced another has nothing to roll back to.
    lone = f"lone-{uuid.uuid4().hex[:6]}"
    mlflow.set_tracking_uri(stack.settings.resolved_tracking_uri())
    version = str(mlflow.register_model(versions.good.model_uri, lone).version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MlflowClient(stack.settings.resolved_tracking_uri()).transition_model_version_stage(
            lone, version, "Production"
        )
    nothing = client.post("/registry/rollback", json={"name": lone}, headers=stack.admin_headers())
    assert nothing.status_code == 409, nothing.text
    assert nothing.json() == {
        "detail": f"model {lone} v{version} records no previous version and none is Archived"
    }


def test_an_uploaded_csv_reports_progress_and_its_scored_file_downloads(
    stack: Stack, client: httpx.Client
) -> None:
    rows = 20_000  # 10 chunks of the stack's 2,000 rows
    frame = iris_frame(rows, seed=7)
    upload = client.post(
        "/batch",
        content=frame.to_csv(index=False).encode(),
        headers={"content-type": "text/csv"},
    )
    assert upload.status_code == 202, upload.text
    task_id = upload.json()["task_id"]

    early = client.get(f"/batch/{task_id}/output")
    progress: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = client.get(f"/tasks/{task_id}").json()
        if status["status"] == "success":
            break
        assert status["status"] != "failure", status
        if "progress" in status:
            assert status["status"] == "started" and status["state"] == "PROGRESS"
            progress.append(status["progress"]["rows"])
        time.sleep(0.02)
    result = status["result"]
    assert result["rows"] == rows
    # Seen mid-file, in whole chunks, never going back.
    assert progress, "no progress reported while the file was scored"
    assert all(0 < n < rows or n == rows for n in progress) and progress == sorted(progress)
    assert all(n % 2000 == 0 for n in progress)
    assert early.status_code == 404 and "has not finished" in early.json()["detail"]

    download = client.get(f"/batch/{task_id}/output")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"].startswith("text/csv")
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment") and f"{task_id}.scored.csv" in disposition
    scored = pd.read_csv(io.BytesIO(download.content))
    assert len(scored) == rows
    pd.testing.assert_frame_equal(scored[FEATURES], frame, check_dtype=False)
    assert scored["request_id"].tolist() == [f"{task_id}-{i}" for i in range(rows)]
    version = result["model"]["version"]
    assert set(scored["model_version"].astype(str)) == {version}
    assert set(scored["label"]) <= {"setosa", "versicolor", "virginica"}
    # The same rows through /invocations (the same served version) predict the same.
    sample = frame.iloc[:200]
    direct = client.post(
        "/invocations",
        json={"dataframe_split": {"columns": FEATURES, "data": sample.values.tolist()}},
    )
    assert client.get("/model").json()["version"] == version
    assert direct.json()["predictions"] == scored["prediction"].iloc[:200].tolist()


def test_batch_downloads_refuse_what_they_must_not_serve(
    stack: Stack, client: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    parquet = client.post(
        "/batch",
        content=iris_frame(30, seed=8).to_parquet(),
        headers={"content-type": "application/vnd.apache.parquet"},
    )
    parquet_id = parquet.json()["task_id"]
    wait_task(client, parquet_id)
    got = client.get(f"/batch/{parquet_id}/output")
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/vnd.apache.parquet"
    assert len(pd.read_parquet(io.BytesIO(got.content))) == 30

    # A path task whose output the caller put outside the batch folder: scored, not served.
    folder = tmp_path_factory.mktemp("elsewhere")
    source = folder / "in.csv"
    iris_frame(10).to_csv(source, index=False)
    outside = client.post(
        "/batch", json={"path": str(source), "output_path": str(folder / "out.csv")}
    ).json()["task_id"]
    assert wait_task(client, outside)["result"]["output"] == str(folder / "out.csv")
    refused = client.get(f"/batch/{outside}/output")
    assert refused.status_code == 404
    assert "outside the batch folder" in refused.json()["detail"]

    # A header-only file fails on the worker: nothing to download.
    empty = client.post(
        "/batch", content=",".join(FEATURES).encode() + b"\n", headers={"content-type": "text/csv"}
    ).json()["task_id"]
    wait_task(client, empty, until=("failure",))
    failed = client.get(f"/batch/{empty}/output")
    assert failed.status_code == 404 and failed.json()["detail"] == (
        f"task {empty} failed: it has no output"
    )

    # A scoring task has no file; an id never sent is unknown.
    single = client.post("/predict/async", json={"features": [5.1, 3.5, 1.4, 0.2]})
    single_id = single.json()["task_id"]
    wait_task(client, single_id)
    no_file = client.get(f"/batch/{single_id}/output")
    assert no_file.status_code == 404
    assert no_file.json()["detail"] == f"task {single_id} has no output file"
    never = client.get(f"/batch/never-{uuid.uuid4().hex}/output")
    assert never.status_code == 404 and "was ever sent" in never.json()["detail"]

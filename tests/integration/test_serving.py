"""The REST API against a real MLflow server on PostgreSQL, over real HTTP.

One tracking server for the module, started with the settings a webhook receiver needs, so
the alias test gets its webhook from MLflow itself. Two APIs: one following the Production
stage by polling, one following an alias with a poll interval so long that only the webhook
can explain a fast swap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest
from cryptography.fernet import Fernet
from mlflow.tracking import MlflowClient

from lifecycle.core import mlflow_gateway
from lifecycle.core.settings import Settings
from serving.webhooks import sign
from tests.support.api import (
    IRIS_ROW,
    Api,
    LoadLoop,
    assert_schemathesis_passed,
    metric_value,
    register_broken_version,
    run_schemathesis,
    serve_api,
    wait_version,
)
from tests.support.services import TrackingServer, free_port, temp_database, tracking_server
from training.train import TrainRequest, train

pytestmark = pytest.mark.postgres

NAME = "serving-iris"
POLL = 1.0
STAGE_WORKERS = 2
ADMIN = "admin-token-for-tests"
SECRET = "webhook-secret-for-tests"
MAX_ROWS = 50
MAX_BYTES = 16384


@dataclass
class World:
    settings: Settings
    server: TrackingServer
    client: MlflowClient
    v1: str
    v2: str
    workdir: Path
    alias_port: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, app_database_url: str) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("serving")
    (workdir / "tracking").mkdir()
    webhook_env = {
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }
    with (
        temp_database("lc_serving") as backend,
        tracking_server(backend, workdir / "tracking", extra_env=webhook_env) as server,
    ):
        settings = Settings(
            tracking_uri=server.uri,
            database_url=app_database_url,
            data_dir=workdir / "data",
            experiment_name="serving",
        )
        v1 = train(settings, TrainRequest("iris", register=True, model_name=NAME)).version
        assert v1
        client = mlflow_gateway.connect(settings)
        # The same artifacts under a second version number: only the version must differ.
        first = client.get_model_version(NAME, v1)
        v2 = str(mlflow.register_model(first.source, NAME, await_registration_for=0).version)
        alias_port = free_port()
        # The alias API's receiver is registered with MLflow before any alias moves.
        client.create_webhook(
            name="lifecycle-serving",
            url=f"http://127.0.0.1:{alias_port}/webhooks/mlflow",
            events=["model_version_alias.created"],
            secret=SECRET,
        )
        yield World(settings, server, client, v1, v2, workdir, alias_port)


def _env(world: World, app_database_url: str, **extra: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": world.server.uri,
        "LIFECYCLE_MODEL_NAME": NAME,
        "LIFECYCLE_DATABASE_URL": app_database_url,
        "LIFECYCLE_ADMIN_TOKEN": ADMIN,
        "LIFECYCLE_WEBHOOK_SECRET": SECRET,
        "LIFECYCLE_MAX_BATCH_ROWS": str(MAX_ROWS),
        "LIFECYCLE_MAX_BODY_BYTES": str(MAX_BYTES),
        **extra,
    }


@pytest.fixture(scope="module")
def stage_api(world: World, app_database_url: str) -> Iterator[Api]:
    world.client.transition_model_version_stage(
        NAME, world.v1, "Production", archive_existing_versions=True
    )
    env = _env(world, app_database_url, LIFECYCLE_POLL_INTERVAL=str(POLL))
    # Two workers: each follows the registry on its own, metrics are merged across them.
    with serve_api(env, world.workdir / "stage-api", workers=STAGE_WORKERS) as api:
        wait_version(api.url, world.v1, in_a_row=20)
        yield api


@pytest.fixture(scope="module")
def alias_api(world: World, app_database_url: str) -> Iterator[Api]:
    world.client.set_registered_model_alias(NAME, "champion", world.v1)
    env = _env(
        world,
        app_database_url,
        LIFECYCLE_MODEL_URI=f"models:/{NAME}@champion",
        LIFECYCLE_POLL_INTERVAL="600",
    )
    with serve_api(env, world.workdir / "alias-api", port=world.alias_port) as api:
        wait_version(api.url, world.v1)
        yield api


def _check_swap(loop: LoadLoop, moved_at: float, old: str, new: str, within: float) -> None:
    results = loop.snapshot()
    failed = [r for r in results if r.status != 200]
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:3]}"
    assert {r.version for r in results} <= {old, new}
    assert any(r.version == old for r in results if r.received < moved_at)
    late = [r for r in results if r.sent >= moved_at + within]
    assert late, "the load loop sent nothing after the deadline"
    stale = [r for r in late if r.version != new]
    assert not stale, f"{len(stale)} responses after {within}s still from v{old}"


def test_stage_promotion_swaps_under_load_without_failures(world: World, stage_api: Api) -> None:
    with LoadLoop(stage_api.url) as loop:
        time.sleep(1.0)
        world.client.transition_model_version_stage(
            NAME, world.v2, "Production", archive_existing_versions=True
        )
        moved_at = time.monotonic()
        time.sleep(POLL + 3.0)
    _check_swap(loop, moved_at, world.v1, world.v2, POLL + 2.0)
    assert len(loop.results) > 50
    model = httpx.get(f"{stage_api.url}/model").json()
    assert model["version"] == world.v2 and model["stage"] == "Production"
    assert model["scoring_path"] == "linear"


def test_alias_move_delivered_by_mlflow_webhook_swaps_at_once(world: World, alias_api: Api) -> None:
    with LoadLoop(alias_api.url) as loop:
        time.sleep(1.0)
        world.client.set_registered_model_alias(NAME, "champion", world.v2)
        moved_at = time.monotonic()
        time.sleep(3.0)
    # Polling is every 600 s here, so only the webhook explains a swap within 2 s.
    _check_swap(loop, moved_at, world.v1, world.v2, 2.0)
    metrics = httpx.get(f"{alias_api.url}/metrics").text
    assert (
        metric_value(metrics, "lifecycle_requests_total", endpoint="/webhooks/mlflow", status="202")
        >= 1
    )
    served = httpx.post(f"{alias_api.url}/predict", json={"features": IRIS_ROW})
    assert served.json()["model"]["alias"] == "champion"
    assert served.headers["x-model-alias"] == "champion"


def test_broken_version_keeps_old_model_and_counts_failure(world: World, stage_api: Api) -> None:
    served = httpx.get(f"{stage_api.url}/ready").json()["model"]["version"]
    before = metric_value(
        httpx.get(f"{stage_api.url}/metrics").text, "lifecycle_model_swap_failures_total"
    )
    broken = register_broken_version(world.client, NAME, world.v1)
    world.client.transition_model_version_stage(
        NAME, broken, "Production", archive_existing_versions=True
    )
    try:
        deadline = time.monotonic() + POLL + 10
        after = before
        while time.monotonic() < deadline and after <= before:
            time.sleep(0.25)
            text = httpx.get(f"{stage_api.url}/metrics").text
            after = metric_value(text, "lifecycle_model_swap_failures_total", version=broken)
        assert after >= 1, stage_api.logs()[-3000:]
        for _ in range(10):
            response = httpx.post(f"{stage_api.url}/predict", json={"features": IRIS_ROW})
            assert response.status_code == 200
            assert response.json()["model"]["version"] == served
        # No hot loop: each of the STAGE_WORKERS workers tries the broken version once, then
        # backs off, so the count settles at most at one failure per worker and stays there.
        time.sleep(POLL * 3)
        text = httpx.get(f"{stage_api.url}/metrics").text
        settled = metric_value(text, "lifecycle_model_swap_failures_total", version=broken)
        assert 1 <= settled <= STAGE_WORKERS
        for _ in range(2 * STAGE_WORKERS):
            ready = httpx.get(f"{stage_api.url}/ready")
            assert ready.status_code == 200
            assert ready.json()["status"] == "ready"
            assert ready.json()["details"]["failed_version"] == broken
        time.sleep(POLL * 3)
        text = httpx.get(f"{stage_api.url}/metrics").text
        assert metric_value(text, "lifecycle_model_swap_failures_total", version=broken) == settled
    finally:
        world.client.transition_model_version_stage(
            NAME, served, "Production", archive_existing_versions=True
        )
        # Meanwhile the served version was labelled Archived, as the registry said; every
        # worker labels it Production again on its next poll.
        deadline, streak = time.monotonic() + POLL + 10, 0
        while streak < 4 * STAGE_WORKERS and time.monotonic() < deadline:
            body = httpx.get(f"{stage_api.url}/ready").json()
            fresh = body["model"]["stage"] == "Production" and not body["details"]["stale"]
            streak = streak + 1 if fresh else 0
            time.sleep(0.05)


def test_predict_shapes_and_model_headers(stage_api: Api) -> None:
    one = httpx.post(f"{stage_api.url}/predict", json={"features": IRIS_ROW})
    assert one.status_code == 200
    body = one.json()
    assert body["label"] == "setosa" and body["prediction"] == 0
    assert set(body["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert one.headers["x-request-id"] == body["request_id"]
    assert one.headers["x-model-name"] == NAME
    assert one.headers["x-model-version"] == body["model"]["version"]
    assert one.headers["x-model-stage"] == "Production"
    assert one.headers["x-model-run-id"] == body["model"]["run_id"]
    names = [f["name"] for f in httpx.get(f"{stage_api.url}/model").json()["features"]]
    by_name = httpx.post(
        f"{stage_api.url}/predict", json={"features": dict(zip(names, IRIS_ROW, strict=True))}
    )
    assert by_name.json()["label"] == "setosa"
    batch = httpx.post(
        f"{stage_api.url}/predict", json={"instances": [IRIS_ROW, [6.7, 3.0, 5.2, 2.3]]}
    ).json()
    assert [p["label"] for p in batch["predictions"]] == ["setosa", "virginica"]
    assert batch["predictions"][1]["request_id"] == f"{batch['request_id']}-1"


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": "NAMES", "data": [IRIS_ROW]}},
        {"dataframe_records": "RECORDS"},
        {"instances": "RECORDS"},
        {"inputs": "RECORDS"},
    ],
    ids=["dataframe_split", "dataframe_records", "instances", "inputs"],
)
def test_invocations_speaks_mlflow_scoring_protocol(stage_api: Api, payload: dict) -> None:
    names = [f["name"] for f in httpx.get(f"{stage_api.url}/model").json()["features"]]
    text = json.dumps(payload)
    text = text.replace('"NAMES"', json.dumps(names))
    text = text.replace('"RECORDS"', json.dumps([dict(zip(names, IRIS_ROW, strict=True))]))
    response = httpx.post(
        f"{stage_api.url}/invocations",
        content=text,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [0]}
    assert response.headers["x-model-version"]


def _post_raw(api: Api, body: bytes | str, ctype: str = "application/json") -> httpx.Response:
    return httpx.post(f"{api.url}/predict", content=body, headers={"Content-Type": ctype})


@pytest.mark.parametrize(
    ("body", "ctype", "status", "says"),
    [
        ('{"features": [5.1, 3.5, 1.4]}', None, 422, "expected 4 features"),
        ('{"features": {"petal": 1.0}}', None, 422, "unknown feature(s) 'petal'"),
        ('{"features": [NaN, 3.5, 1.4, 0.2]}', None, 422, "NaN is not a valid number"),
        ('{"features": [Infinity, 3.5, 1.4, 0.2]}', None, 422, "Infinity is not a valid number"),
        ('{"features": [1e999, 3.5, 1.4, 0.2]}', None, 422, "must be finite"),
        ('{"features": ["5.1", 3.5, 1.4, 0.2]}', None, 422, "must be a number, got '5.1'"),
        ('{"features": [true, 3.5, 1.4, 0.2]}', None, 422, "must be a number, got bool"),
        ('{"instances": []}', None, 422, "instances is empty"),
        (
            json.dumps({"instances": [IRIS_ROW] * (MAX_ROWS + 1)}),
            None,
            413,
            "the limit is 50: set LIFECYCLE_MAX_BATCH_ROWS to accept more",
        ),
        ('{"features": [5.1, 3.5, ', None, 400, "malformed JSON"),
        ('{"rows": [1]}', None, 422, "unknown field(s) rows"),
        ("features=5.1", "application/x-www-form-urlencoded", 415, "must be application/json"),
        (" " * (MAX_BYTES + 1) + "{}", None, 413, "the limit is 16384"),
    ],
    ids=[
        "wrong-count",
        "unknown-name",
        "nan",
        "infinity",
        "overflow",
        "string",
        "bool",
        "empty-batch",
        "over-max-batch",
        "malformed-json",
        "unknown-field",
        "content-type",
        "too-large",
    ],
)
def test_bad_input_is_a_4xx_naming_the_problem(
    stage_api: Api, body: str, ctype: str | None, status: int, says: str
) -> None:
    response = _post_raw(stage_api, body, ctype or "application/json")
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]


def test_feedback_labels_feed_accuracy_metrics(stage_api: Api) -> None:
    made = httpx.post(f"{stage_api.url}/predict", json={"features": IRIS_ROW}).json()
    version = made["model"]["version"]
    ok = httpx.post(
        f"{stage_api.url}/feedback", json={"request_id": made["request_id"], "label": 0}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["label"] == "setosa"  # raw class value normalised to the class label
    unknown = httpx.post(
        f"{stage_api.url}/feedback", json={"request_id": uuid.uuid4().hex, "label": "setosa"}
    )
    assert unknown.status_code == 404
    bad = httpx.post(
        f"{stage_api.url}/feedback", json={"request_id": made["request_id"], "label": "tulip"}
    )
    assert bad.status_code == 422 and "tulip" in bad.json()["detail"]
    # The worker that took the feedback refreshes its gauges on its next scrape; the other
    # worker's refresh is at most 10 s old. Either way a scrape soon shows it.
    deadline = time.monotonic() + 15
    accuracy = 0.0
    while time.monotonic() < deadline and accuracy != 1.0:
        text = httpx.get(f"{stage_api.url}/metrics").text
        accuracy = metric_value(text, "lifecycle_feedback_accuracy", version=version)
        time.sleep(0.2)
    assert accuracy == 1.0
    assert metric_value(text, "lifecycle_predictions_total", label="setosa") >= 1
    assert metric_value(text, "lifecycle_model_info", name=NAME, version=version) == 1


def test_reload_model_requires_the_admin_token(stage_api: Api) -> None:
    url = f"{stage_api.url}/reload_model"
    missing = httpx.post(url)
    assert missing.status_code == 401 and "Bearer" in missing.json()["detail"]
    wrong = httpx.post(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "wrong" in wrong.json()["detail"]
    right = httpx.post(url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert right.status_code == 200
    assert right.json()["outcome"] in {"unchanged", "loaded"}


def _webhook(api: Api, headers: dict[str, str], body: str) -> httpx.Response:
    return httpx.post(
        f"{api.url}/webhooks/mlflow",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )


def test_webhook_rejects_missing_wrong_stale_and_replayed_signatures(stage_api: Api) -> None:
    body = json.dumps(
        {"entity": "model_version_alias", "action": "created", "data": {"name": NAME}}
    )
    now = str(int(time.time()))
    delivery = str(uuid.uuid4())
    good = {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": now,
        "X-MLflow-Signature": sign(SECRET, delivery, now, body),
    }
    missing = _webhook(stage_api, {}, body)
    assert missing.status_code == 401 and "X-MLflow-Signature" in missing.json()["detail"]
    wrong = _webhook(
        stage_api, {**good, "X-MLflow-Signature": sign("other", delivery, now, body)}, body
    )
    assert wrong.status_code == 403 and "does not match" in wrong.json()["detail"]
    tampered = _webhook(stage_api, good, body.replace("created", "deleted"))
    assert tampered.status_code == 403
    old = str(int(time.time()) - 600)
    stale = _webhook(
        stage_api,
        {
            **good,
            "X-MLflow-Timestamp": old,
            "X-MLflow-Signature": sign(SECRET, delivery, old, body),
        },
        body,
    )
    assert stale.status_code == 403 and "tolerance" in stale.json()["detail"]
    accepted = _webhook(stage_api, good, body)
    assert accepted.status_code == 202, accepted.text
    replayed = _webhook(stage_api, good, body)
    assert replayed.status_code == 403 and "already received" in replayed.json()["detail"]


# The operations whose bodies and answers have a fixed shape (Pydantic models): every check
# holds on them. /predict, /invocations and /predict/async take the served model's shape and
# /webhooks/mlflow a signed body, so they only get the no-server-error run.
FIXED_SHAPE = (
    "/feedback",
    "/batch",
    "/tasks/{task_id}",
    "/reload_model",
    "/health",
    "/ready",
    "/model",
    "/metrics",
)


def _schemathesis(
    api: Api, report_dir: Path, *options: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return run_schemathesis(api.url, report_dir, ADMIN, *options, config=config)


def _passed(result: subprocess.CompletedProcess[str]) -> None:
    assert_schemathesis_passed(result)


def test_schemathesis_finds_no_server_error(stage_api: Api, tmp_path: Path) -> None:
    # /reports is fuzzed by test_reports_api against an index whose artifacts live on that
    # API's tracking server; this module's API follows another tracking server, where the
    # session's shared index names artifacts that do not exist (a 503 by design).
    checks = ("--checks", "not_a_server_error", "--exclude-path-regex", "^/reports")
    _passed(_schemathesis(stage_api, tmp_path, *checks))


def _contract_config(request_id: str, classes: list[object]) -> str:
    # TOML arrays of strings and numbers are spelled as in JSON.
    return f"""
# 413 (body over the size limit) refuses a request as surely as 400 or 422, but is not in
# schemathesis's default list, and generated strings can be long enough to reach the limit.
[checks.negative_data_rejection]
expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx",
]

# A feedback label must be a class of the served model, which the document cannot name (it
# changes with the model), and the request id must be one the store holds. Real ones, so
# schema-valid feedback is recorded (200), not refused.
[dictionaries.labels]
values = {json.dumps(classes)}

[dictionaries.request_ids]
values = {json.dumps([request_id])}

[[operations]]
include-path = "/feedback"
include-method = "POST"

[operations.parameters]
"body.label" = {{ dictionary = "labels" }}
"body.request_id" = {{ dictionary = "request_ids" }}
"""


def test_fixed_shape_operations_keep_their_openapi_contract(stage_api: Api, tmp_path: Path) -> None:
    """All checks, among them: a schema-valid request is accepted, a schema-violating one is
    refused, and every answer (status, headers, body) is the one the document declares."""
    # Its feedback lands on a prediction of its own, after the feedback test read accuracy.
    made = httpx.post(f"{stage_api.url}/predict", json={"features": IRIS_ROW}).json()
    model = httpx.get(f"{stage_api.url}/model").json()
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        _contract_config(made["request_id"], [*model["class_labels"], *model["classes"]])
    )
    paths = [option for path in FIXED_SHAPE for option in ("--include-path", path)]
    result = _schemathesis(stage_api, tmp_path / "report", "--checks", "all", *paths, config=config)
    _passed(result)
    assert f"Selected: {len(FIXED_SHAPE)}/" in result.stdout, result.stdout[-4000:]


def test_registry_outage_keeps_serving_and_ready_says_degraded(
    world: World, stage_api: Api
) -> None:
    """Last in the module: it takes the tracking server away for good."""
    served = httpx.get(f"{stage_api.url}/ready").json()["model"]["version"]
    os.killpg(world.server.process.pid, signal.SIGKILL)
    world.server.process.wait(10)
    deadline = time.monotonic() + POLL + 10
    details: dict = {}
    while time.monotonic() < deadline:
        ready = httpx.get(f"{stage_api.url}/ready")
        assert ready.status_code == 200
        details = ready.json()["details"]
        if details["registry"] == "degraded":
            break
        time.sleep(0.2)
    assert details["registry"] == "degraded", details
    assert "unreachable" in details["registry_error"]
    response = httpx.post(f"{stage_api.url}/predict", json={"features": IRIS_ROW})
    assert response.status_code == 200
    assert response.json()["model"]["version"] == served

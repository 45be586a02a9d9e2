"""The scale-out shape (docs/scaling.md): two API replicas and a Celery worker, each its own
process on the same RabbitMQ and PostgreSQL, follow a promotion by themselves, and every
prediction they make lands in the one store with the version that made it.

The module's own stack (it promotes): MLflow on PostgreSQL, `lifecycle serve` (replica A),
`lifecycle worker`; replica B is a second `lifecycle serve` on another port with its own data
directory (its own spool), as on another host.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.support.api import IRIS_ROW, Api, serve_api, wait_version
from tests.support.services import TrackingServer
from tests.support.stack import Stack
from tests.support.worker import wait_task
from training.train import TrainRequest, train

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def replica_b(stack: Stack) -> Iterator[Api]:
    workdir = stack.workdir / "replica-b"
    env = {**stack.env, "LIFECYCLE_DATA_DIR": str(workdir / "data")}
    with serve_api(env, workdir) as api:
        yield api


def _predict(url: str, request_id: str) -> str:
    response = httpx.post(
        f"{url}/predict", json={"features": IRIS_ROW}, headers={"x-request-id": request_id}
    )
    assert response.status_code == 200, response.text
    version: str = response.json()["model"]["version"]
    return version


def _wait_stored(stack: Stack, ids: list[str], timeout: float = 20) -> dict[str, dict[str, object]]:
    """REST rows are written off the request path: wait until all are in the store."""
    deadline = time.monotonic() + timeout
    found: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline:
        rows = stack.stored("request_id IN :ids", ids=tuple(ids))
        found = {str(r["request_id"]): r for r in rows}
        if len(found) == len(ids):
            return found
        time.sleep(0.2)
    raise AssertionError(f"stored {sorted(found)} of {sorted(ids)}")


def test_replicas_and_worker_follow_a_promotion_and_share_one_store(
    stack: Stack, replica_b: Api, pg_tracking: TrackingServer
) -> None:
    replicas = {"a": stack.api.url, "b": replica_b.url}
    tag = uuid.uuid4().hex[:8]
    for url in replicas.values():
        wait_version(url, "1")
    before = [f"scale-{tag}-{name}-v1" for name in replicas]
    assert [_predict(url, rid) for url, rid in zip(replicas.values(), before, strict=True)] == [
        "1",
        "1",
    ]

    v2 = str(
        train(
            stack.settings, TrainRequest(dataset="iris", register=True, model_name=stack.name)
        ).version
    )
    MlflowClient(pg_tracking.uri).transition_model_version_stage(
        stack.name, v2, "Production", archive_existing_versions=True
    )

    # No reload call and no webhook: each replica finds the new version on its own poll.
    for url in replicas.values():
        wait_version(url, v2, timeout=60)
    after = [f"scale-{tag}-{name}-v2" for name in replicas]
    assert [_predict(url, rid) for url, rid in zip(replicas.values(), after, strict=True)] == [
        v2,
        v2,
    ]
    with httpx.Client(base_url=replica_b.url, timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:
            task = client.post("/predict/async", json={"features": IRIS_ROW}).json()["task_id"]
            version = wait_task(client, task)["result"]["model"]["version"]
            if version == v2 or time.monotonic() > deadline:
                break
    assert version == v2

    stored = _wait_stored(stack, [*before, *after, task])
    assert {rid: stored[rid]["model_version"] for rid in before} == dict.fromkeys(before, "1")
    assert {rid: stored[rid]["model_version"] for rid in after} == dict.fromkeys(after, v2)
    assert {rid: stored[rid]["source"] for rid in [*before, *after]} == dict.fromkeys(
        [*before, *after], "rest"
    )
    assert stored[task]["model_version"] == v2
    assert stored[task]["source"] == "async"
    assert replica_b.process.poll() is None and stack.api.process.poll() is None

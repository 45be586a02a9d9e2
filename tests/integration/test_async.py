"""Async scoring through REST, the worker and the real RabbitMQ.

One module-wide stack: MLflow on PostgreSQL, `lifecycle serve`, and `lifecycle worker` as
subprocesses on a fresh RabbitMQ vhost. Tests run in file order: the SIGKILL test replaces the
worker, and the promotion test (last) moves Production to a new version.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest
import sqlalchemy as sa
from kombu import Connection, Exchange, Producer, Queue
from mlflow.tracking import MlflowClient

from serving.worker import SCORE_TASK, LifecycleCelery, make_celery
from tests.support.api import IRIS_ROW
from tests.support.services import TrackingServer
from tests.support.stack import FEATURES, Stack, drain, iris_frame
from tests.support.worker import start_worker, wait_task
from training.train import TrainRequest, train

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def test_single_and_batch_round_trip_through_rest(stack: Stack, tmp_path: Path) -> None:
    with stack.client() as client:
        response = client.post("/predict/async", json={"features": IRIS_ROW})
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        assert response.headers["location"] == f"/tasks/{task_id}"
        done = wait_task(client, task_id)
        assert done["result"]["model"]["version"] == "1"
        assert done["result"]["label"] in ("setosa", "versicolor", "virginica")

        response = client.post("/predict/async", json={"instances": [IRIS_ROW] * 3})
        batch_id = response.json()["task_id"]
        rows = wait_task(client, batch_id)["result"]["predictions"]
        assert [r["request_id"] for r in rows] == [f"{batch_id}-{i}" for i in range(3)]

        # Bad input is refused at once, not queued.
        bad = client.post("/predict/async", json={"features": [1.0, 2.0]})
        assert bad.status_code == 422 and "expected 4 features" in bad.json()["detail"]

        # A file path the worker reads, and an uploaded Parquet file.
        source = tmp_path / "in.csv"
        iris_frame(500).to_csv(source, index=False)
        file_task = client.post("/batch", json={"path": str(source)}).json()["task_id"]
        result = wait_task(client, file_task)["result"]
        out = pd.read_csv(result["output"])
        assert len(out) == 500 and result["rows"] == 500
        assert set(FEATURES) < set(out.columns)
        assert {"prediction", "probability", "model_version"} < set(out.columns)
        assert (out["model_version"] == 1).all() and out["probability"].between(0, 1).all()

        parquet = tmp_path / "in.parquet"
        iris_frame(300, seed=1).to_parquet(parquet)
        upload = client.post(
            "/batch",
            content=parquet.read_bytes(),
            headers={"content-type": "application/vnd.apache.parquet"},
        )
        assert upload.status_code == 202, upload.text
        scored = pd.read_parquet(wait_task(client, upload.json()["task_id"])["result"]["output"])
        assert len(scored) == 300 and (scored["model_version"] == "1").all()

    single = stack.stored("request_id = :id", id=task_id)
    assert single == [{"request_id": task_id, "source": "async", "model_version": "1"}]
    assert {r["source"] for r in stack.stored("request_id LIKE :p", p=f"{batch_id}-%")} == {"async"}
    assert len(stack.stored("request_id LIKE :p", p=f"{batch_id}-%")) == 3
    file_rows = stack.stored("request_id LIKE :p", p=f"{file_task}-%")
    assert len(file_rows) == 500 and {r["source"] for r in file_rows} == {"batch"}


def test_plain_amqp_message_gets_its_result_and_malformed_ones_are_dead_lettered(
    stack: Stack,
) -> None:
    results = Exchange("prediction_results", type="topic", durable=True)
    requests = Queue("prediction_requests", durable=True)
    dead = Queue("prediction_requests.dead_letter", durable=True)
    with Connection(stack.broker) as conn:
        channel = conn.channel()
        watch = Queue(f"watch-{uuid.uuid4().hex[:6]}", results, "#", exclusive=True)
        reply = Queue(f"reply-{uuid.uuid4().hex[:6]}", exclusive=True)
        for entity in (requests, dead, watch, reply):
            entity(channel).declare()
        producer = Producer(channel)
        rid = uuid.uuid4().hex
        producer.publish(
            json.dumps({"request_id": rid, "features": IRIS_ROW}),
            routing_key="prediction_requests",
            content_type="application/json",
            content_encoding="utf-8",
            reply_to=reply.name,
            correlation_id="corr-1",
        )
        producer.publish(
            b"{not json",
            routing_key="prediction_requests",
            content_type="application/json",
            correlation_id="corr-2",
        )
        producer.publish(
            json.dumps({"features": [1, 2]}),
            routing_key="prediction_requests",
            content_type="application/json",
            reply_to=reply.name,
            correlation_id="corr-3",
        )
        replies = drain(conn, reply, 2)
        on_exchange = drain(conn, watch, 3)
        dead_letters = drain(conn, dead, 2)

    ok = next(m for m in replies if m.properties["correlation_id"] == "corr-1")
    body = json.loads(ok.body)
    assert body["request_id"] == rid and body["model"]["name"] == stack.name
    assert body["label"] in ("setosa", "versicolor", "virginica")
    invalid = next(m for m in replies if m.properties["correlation_id"] == "corr-3")
    assert "expected 4 features" in json.loads(invalid.body)["error"]
    keys = sorted(m.delivery_info["routing_key"] for m in on_exchange)
    assert keys == ["prediction.error", "prediction.error", "prediction.result"]
    reasons = {m.properties["correlation_id"]: m.headers["x-lifecycle-error"] for m in dead_letters}
    assert "malformed JSON" in reasons["corr-2"]
    assert "expected 4 features" in reasons["corr-3"]
    assert stack.stored("request_id = :id", id=rid)[0]["source"] == "async"
    assert stack.worker.process.poll() is None


def _celery_client(stack: Stack) -> LifecycleCelery:
    return make_celery(stack.settings.model_copy(update={"broker_url": stack.broker}))


def _send_paused(app: LifecycleCelery, tasks: dict[str, Any]) -> None:
    """Send one-row score tasks while the worker does not consume, so that it finds them all
    waiting when it resumes (as after a burst or a restart)."""
    queue = app.lifecycle_settings.task_queue
    assert app.control.cancel_consumer(queue, reply=True, timeout=10, limit=1)
    try:
        with app.producer_or_acquire() as producer:
            for task_id, body in tasks.items():
                app.send_task(
                    SCORE_TASK, args=[task_id, body, "async"], task_id=task_id, producer=producer
                )
    finally:
        assert app.control.add_consumer(queue, reply=True, timeout=10, limit=1)


def _unacknowledged(stack: Stack) -> int:
    vhost = unquote(urlsplit(stack.broker).path[1:])
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages_unacknowledged"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    counts = [line.split()[-1] for line in out.splitlines() if line.strip()]
    return sum(int(count) for count in counts if count.isdigit())  # past the header line


def test_waiting_one_row_tasks_are_scored_in_batches_wider_than_the_worker_threads(
    stack: Stack,
) -> None:
    """The score task's strategy (serving/score_strategy.py): tasks go from the event loop to the
    batch, more at once than the worker's 16 threads, and each is acknowledged once stored; a
    bad request still fails through Celery's own path, with its error as the task's state."""
    app = _celery_client(stack)
    prefix = f"fast-{uuid.uuid4().hex[:6]}"
    bad = {f"{prefix}-017", f"{prefix}-150"}
    tasks: dict[str, Any] = {f"{prefix}-{i:03d}": {"features": IRIS_ROW} for i in range(200)}
    tasks.update({task_id: {"features": [1.0]} for task_id in bad})
    _send_paused(app, tasks)
    with stack.client() as client:
        for task_id in tasks:
            if task_id not in bad:
                assert wait_task(client, task_id)["result"]["request_id"] == task_id
        for task_id in bad:
            state = wait_task(client, task_id, until=("failure",))
            assert "expected 4 features" in state["error"], state
    sql = (
        "SELECT created_at, count(*) AS n FROM prediction_rows WHERE request_id LIKE :p "
        "GROUP BY created_at"
    )
    with stack.engine.connect() as conn:
        batches = [row.n for row in conn.execute(sa.text(sql), {"p": f"{prefix}-%"})]
    assert sum(batches) == len(tasks) - len(bad)  # each stored once, the bad ones not at all
    # A batch holds more tasks than the worker has threads (2 slots x 8): the prefetch window
    # widened for the messages the batch held.
    assert max(batches) > 16, batches
    logs = stack.worker.logs()
    # Only the bad ones went through Celery's Request (its "received" line): after failing in
    # the batch they were handed to the standard path, which stored their failure.
    received = {task_id for task_id in tasks if f"lifecycle.score[{task_id}] received" in logs}
    assert received == bad
    deadline = time.monotonic() + 10
    while _unacknowledged(stack):
        assert time.monotonic() < deadline, "every answered task is acknowledged"
        time.sleep(0.2)


def test_a_one_row_batch_that_cannot_be_stored_is_retried_by_celery_and_stored_once(
    stack: Stack,
) -> None:
    """A batch whose SUCCESS states cannot be written (the database refuses them for a while):
    the fast path acknowledges none of its messages and hands them to Celery's standard path,
    whose retries store every task once the database takes them again."""
    app = _celery_client(stack)
    prefix = f"retry-{uuid.uuid4().hex[:6]}"
    tasks: dict[str, Any] = {f"{prefix}-{i:02d}": {"features": IRIS_ROW} for i in range(30)}
    refuse = (
        "CREATE FUNCTION lc_refuse_success() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.status = 'SUCCESS' AND NEW.task_id LIKE '{prefix}-%' THEN "
        "RAISE EXCEPTION 'refused for the test'; END IF; RETURN NEW; END $$; "
        "CREATE TRIGGER lc_refuse_success BEFORE INSERT OR UPDATE ON celery_taskmeta "
        "FOR EACH ROW EXECUTE FUNCTION lc_refuse_success()"
    )
    with stack.engine.begin() as conn:
        conn.execute(sa.text(refuse))
    try:
        _send_paused(app, tasks)
        deadline = time.monotonic() + 30
        while "lifecycle.score[" + prefix not in stack.worker.logs():
            assert time.monotonic() < deadline, "the failed batch's tasks reach Celery's path"
            time.sleep(0.2)
        time.sleep(1)  # their first runs fail too, and are retried
    finally:
        with stack.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER lc_refuse_success ON celery_taskmeta")
            conn.exec_driver_sql("DROP FUNCTION lc_refuse_success()")
    with stack.client() as client:
        for task_id in tasks:
            assert wait_task(client, task_id, timeout=90)["result"]["request_id"] == task_id
    assert f"lifecycle.score[{prefix}-00] retry" in stack.worker.logs()
    stored = stack.stored("request_id LIKE :p", p=f"{prefix}-%")
    assert sorted(str(r["request_id"]) for r in stored) == sorted(tasks)


def test_killed_worker_tasks_complete_on_a_new_worker_and_store_once(
    stack: Stack, tmp_path: Path
) -> None:
    rows = 40_000
    source = tmp_path / "big.csv"
    iris_frame(rows, seed=2).to_csv(source, index=False)
    with stack.client() as client:
        big = client.post("/batch", json={"path": str(source)}).json()["task_id"]
        singles = [
            client.post("/predict/async", json={"features": IRIS_ROW}).json()["task_id"]
            for _ in range(20)
        ]
        wait_task(client, big, until=("started",))
        # Mid-file: some chunks are stored, the task is not done.
        deadline = time.monotonic() + 30
        while not stack.stored("request_id LIKE :p LIMIT 1", p=f"{big}-%"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stack.worker.kill()
        stored_before = len(stack.stored("request_id LIKE :p", p=f"{big}-%"))
        assert 0 < stored_before < rows
        assert client.get(f"/tasks/{big}").json()["status"] == "started"

        stack.worker = start_worker(stack.env, stack.workdir / "worker.log")
        result = wait_task(client, big, timeout=120)["result"]
        for task_id in singles:
            wait_task(client, task_id)
    assert result["rows"] == rows and len(pd.read_csv(result["output"])) == rows
    assert len(stack.stored("request_id LIKE :p", p=f"{big}-%")) == rows
    # Both deliveries stamped the rows with the job's accepted time (the key caught the rows
    # the first worker had stored, with no request-id lookup).
    other_times = (
        "request_id LIKE :p AND created_at <> "
        "(SELECT min(created_at) FROM prediction_rows WHERE request_id LIKE :p)"
    )
    assert stack.stored(other_times, p=f"{big}-%") == []
    stored = stack.stored("request_id IN :ids", ids=tuple(singles))
    assert sorted(r["request_id"] for r in stored) == sorted(singles)


def test_promotion_reaches_the_running_worker_without_restart(
    stack: Stack, pg_tracking: TrackingServer
) -> None:
    pid = stack.worker.process.pid
    v2 = train(stack.settings, TrainRequest(dataset="iris", register=True, model_name=stack.name))
    MlflowClient(pg_tracking.uri).transition_model_version_stage(
        stack.name, str(v2.version), "Production", archive_existing_versions=True
    )
    promoted = time.monotonic()
    seen = []
    with stack.client() as client:
        while time.monotonic() - promoted < 30:
            task_id = client.post("/predict/async", json={"features": IRIS_ROW}).json()["task_id"]
            version = wait_task(client, task_id)["result"]["model"]["version"]
            seen.append(version)
            if version == str(v2.version):
                break
        assert seen[-1] == str(v2.version), seen
        # Once the worker has swapped, every later task names the new version.
        later = [
            client.post("/predict/async", json={"features": IRIS_ROW}).json()["task_id"]
            for _ in range(5)
        ]
        versions = {wait_task(client, t)["result"]["model"]["version"] for t in later}
    assert versions == {str(v2.version)}
    assert stack.worker.process.pid == pid and stack.worker.process.poll() is None
    assert stack.stored("request_id = :id", id=later[0])[0]["model_version"] == str(v2.version)

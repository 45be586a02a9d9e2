"""Every transport is a thin translator around one inference core (`serving.inference.infer`).

The same rows sent through REST `/predict`, `/invocations`, a Celery task, a plain-AMQP
message and a CSV batch file give the same predictions, the documented ids and the same stored
records; the same bad row gets the same message through `/predict`, a Celery task, a plain-AMQP
message and a CSV file. The session's shared stack: MLflow on PostgreSQL, `lifecycle serve` and
`lifecycle worker` on a fresh RabbitMQ vhost; records are read back by this module's ids.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from kombu import Connection, Producer, Queue

from serving.worker import SCORE_TASK, make_celery
from tests.support.stack import FEATURES, Stack, drain, iris_frame
from tests.support.worker import wait_task

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

BAD_ROWS = [[5.1, 3.5, 1.4, 0.2], [5.0, "abc", 1.3, 0.2]]
BAD_MESSAGE = "row 1: feature 'sepal width (cm)' must be a number, got 'abc'"


@pytest.fixture(scope="module")
def stack(shared_stack: Stack) -> Stack:
    return shared_stack


def _amqp(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    """Publish one message to the plain-AMQP request queue and read its reply."""
    with Connection(stack.broker) as conn:
        channel = conn.channel()
        reply = Queue(f"reply-{uuid.uuid4().hex[:6]}", exclusive=True)
        reply(channel).declare()
        Queue("prediction_requests", durable=True)(channel).declare()
        Producer(channel).publish(
            json.dumps(body),
            routing_key="prediction_requests",
            content_type="application/json",
            content_encoding="utf-8",
            reply_to=reply.name,
        )
        (message,) = drain(conn, reply, 1)
    answer: dict[str, Any] = json.loads(message.body)
    return answer


def _stored(stack: Stack, prefix: str) -> list[dict[str, Any]]:
    sql = sa.text(
        "SELECT request_id, source, model_version, run_id, features, prediction, label, "
        "probabilities FROM prediction_rows WHERE request_id LIKE :p ORDER BY request_id"
    )
    with stack.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sql, {"p": f"{prefix}-%"})]
    return [
        {
            k: json.loads(v) if isinstance(v, str) and k in ("features", "probabilities") else v
            for k, v in row.items()
        }
        for row in rows
    ]


def test_every_transport_gives_the_same_predictions_ids_and_records(
    stack: Stack, tmp_path: Path
) -> None:
    frame = iris_frame(5, seed=3)
    rows = frame.to_numpy().tolist()
    n = len(rows)
    tag = uuid.uuid4().hex[:8]
    ids = {t: f"{t}{tag}" for t in ("rest", "inv", "celery", "amqp", "file")}
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)

    with stack.client() as client:
        rest = client.post(
            "/predict", json={"instances": rows}, headers={"X-Request-Id": ids["rest"]}
        )
        assert rest.status_code == 200, rest.text
        invocations = client.post(
            "/invocations",
            json={"dataframe_split": {"columns": FEATURES, "data": rows}},
            headers={"X-Request-Id": ids["inv"]},
        )
        assert invocations.status_code == 200, invocations.text
        queued = client.post(
            "/predict/async", json={"instances": rows}, headers={"X-Request-Id": ids["celery"]}
        )
        assert queued.status_code == 202 and queued.json()["task_id"] == ids["celery"]
        celery = wait_task(client, ids["celery"])["result"]
        batch = client.post(
            "/batch", json={"path": str(source)}, headers={"X-Request-Id": ids["file"]}
        )
        assert batch.status_code == 202, batch.text
        scored = pd.read_csv(wait_task(client, ids["file"])["result"]["output"])
    amqp = _amqp(stack, {"request_id": ids["amqp"], "instances": rows})

    answers = {"rest": rest.json(), "celery": celery, "amqp": amqp}
    reference = answers["rest"]["predictions"]
    labels = [p["label"] for p in reference]
    for transport, answer in answers.items():
        items = answer["predictions"]
        assert [p["request_id"] for p in items] == [f"{ids[transport]}-{i}" for i in range(n)]
        assert [p["label"] for p in items] == labels, transport
        assert [p["probabilities"] for p in items] == [p["probabilities"] for p in reference]
        assert answer["model"]["version"] == "1"
    assert invocations.json()["predictions"] == [p["prediction"] for p in reference]
    assert scored["request_id"].tolist() == [f"{ids['file']}-{i}" for i in range(n)]
    assert scored["label"].tolist() == labels
    best = [max(p["probabilities"].values()) for p in reference]
    assert scored["probability"].tolist() == pytest.approx(best, rel=1e-12)

    # One record per row from every transport, alike but for the id and the source.
    sources = {"rest": "rest", "inv": "rest", "celery": "async", "amqp": "async", "file": "batch"}
    expected = [
        {
            "source": None,
            "model_version": "1",
            "features": dict(zip(FEATURES, row, strict=True)),
            "prediction": p["prediction"],
            "label": p["label"],
            "probabilities": pytest.approx(p["probabilities"], rel=1e-12),
        }
        for row, p in zip(rows, reference, strict=True)
    ]
    run_ids = set()
    for transport, prefix in ids.items():
        stored = _stored(stack, prefix)
        assert [r["request_id"] for r in stored] == [f"{prefix}-{i}" for i in range(n)]
        run_ids |= {r.pop("run_id") for r in stored}
        for record in stored:
            record.pop("request_id")
        want = [{**e, "source": sources[transport]} for e in expected]
        assert stored == want, transport
    assert len(run_ids) == 1 and None not in run_ids


def test_a_bad_row_gets_the_same_message_through_every_transport(
    stack: Stack, tmp_path: Path
) -> None:
    bad_csv = tmp_path / "bad.csv"
    pd.DataFrame(BAD_ROWS, columns=FEATURES).to_csv(bad_csv, index=False)
    celery = make_celery(stack.settings.model_copy(update={"broker_url": stack.broker}))
    task_id = f"bad-{uuid.uuid4().hex[:8]}"
    celery.send_task(
        SCORE_TASK,
        task_id=task_id,
        queue=celery.lifecycle_settings.task_queue,
        args=[task_id, {"instances": BAD_ROWS}, "async"],
    )
    with stack.client() as client:
        rest = client.post("/predict", json={"instances": BAD_ROWS})
        assert rest.status_code == 422 and rest.json()["detail"] == BAD_MESSAGE
        task = wait_task(client, task_id, until=("failure",))
        file_id = client.post("/batch", json={"path": str(bad_csv)}).json()["task_id"]
        file_task = wait_task(client, file_id, until=("failure",))
    amqp = _amqp(stack, {"request_id": f"bad-amqp-{task_id}", "instances": BAD_ROWS})

    assert task["error"] == f"InvalidInput: {BAD_MESSAGE}"
    assert file_task["error"] == f"InvalidInput: {BAD_MESSAGE}"
    assert amqp["error"] == BAD_MESSAGE and amqp["status"] == 422
    # Nothing is stored for a request that was refused.
    assert _stored(stack, task_id) == [] and _stored(stack, file_id) == []

"""One-row async messages scored and stored in batches, with "acknowledged means stored" kept.

The plain-AMQP consumer runs in-process on a fresh RabbitMQ vhost with a real fitted iris model
(registry fixed to one version) and the prediction store on a throwaway PostgreSQL cluster that
the outage test stops and starts again. The Celery-side batcher is exercised on the same store.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp
import numpy as np
import pytest
import sqlalchemy as sa
from kombu import Connection, Producer, Queue
from kombu.message import Message

from lifecycle.core.settings import Settings
from lifecycle.core.store import StoreUnavailable
from serving.amqp import PlainAmqpConsumer
from serving.micro_batch import ScoringBatcher
from serving.wiring import Runtime
from tests.support.fixed_model import fixed_runtime
from tests.support.pgcluster import PgCluster, pg_cluster
from tests.support.stack import drain
from tests.support.worker import rabbit_vhost

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

# One row near each iris class, so that a reply crossed with another message's shows.
PROTOTYPES = [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.1]]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with pg_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with rabbit_vhost() as url:
        yield url


@pytest.fixture
def runtime(cluster: PgCluster, broker: str, tmp_path: Path) -> Runtime:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=cluster.url,
        broker_url=broker,
        task_max_retries=1000,
        task_retry_backoff_max=0.2,
    )
    return fixed_runtime(settings)


def _publish(broker: str, bodies: list[bytes | str], reply_to: str) -> None:
    with Connection(broker) as conn:
        channel = conn.channel()
        Queue("prediction_requests", durable=True)(channel).declare()
        producer = Producer(channel)
        for i, body in enumerate(bodies):
            producer.publish(
                body,
                routing_key="prediction_requests",
                content_type="application/json",
                content_encoding="utf-8",
                reply_to=reply_to,
                correlation_id=f"corr-{i}",
            )


def _ready(broker: str, name: str = "prediction_requests") -> int:
    """Messages in the queue that no consumer holds."""
    with Connection(broker) as conn:
        return int(conn.channel().queue_declare(name, passive=True).message_count)


def _stored(url: str, prefix: str) -> list[tuple[str, str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT request_id, label, created_at FROM prediction_rows "
                    "WHERE request_id LIKE :p ORDER BY request_id"
                ),
                {"p": f"{prefix}%"},
            )
            return [(r[0], r[1], r[2]) for r in rows]
    finally:
        engine.dispose()


def _expected_labels(runtime: Runtime) -> list[str]:
    model = runtime.model()
    predicted, _ = model.predictor.predict(np.array(PROTOTYPES, dtype=float))
    return [model.label_of(p.item() if hasattr(p, "item") else p) for p in predicted]


def _reply_queue(conn: Connection) -> Queue:
    reply = Queue(f"reply-{uuid.uuid4().hex[:6]}", exclusive=True)
    reply(conn.channel()).declare()
    return reply


def test_a_batch_of_messages_is_scored_together_stored_once_and_answered_one_by_one(
    runtime: Runtime, broker: str, cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    acks: list[bool] = []
    basic_ack = amqp.Channel.basic_ack

    def counted(self: amqp.Channel, delivery_tag: int, multiple: bool = False, **kw: Any) -> Any:
        if threading.current_thread().name == "plain-amqp":
            acks.append(multiple)
        return basic_ack(self, delivery_tag, multiple, **kw)

    monkeypatch.setattr(amqp.Channel, "basic_ack", counted)
    prefix = f"b-{uuid.uuid4().hex[:6]}"
    labels = _expected_labels(runtime)
    n = 60
    bodies: list[bytes | str] = [
        json.dumps({"request_id": f"{prefix}-{i:03d}", "features": PROTOTYPES[i % 3]})
        for i in range(n)
    ]
    bodies.insert(17, b"{not json")  # rejected alone, in the middle of a batch
    consumer = PlainAmqpConsumer(runtime.settings, lambda: runtime, batch_messages=40)
    with Connection(broker) as conn:
        reply = _reply_queue(conn)
        # Queued before the consumer starts: it receives them back to back, as under load.
        _publish(broker, bodies, reply.name)
        consumer.start()
        try:
            replies = drain(conn, reply, n + 1)
        finally:
            consumer.stop()

    by_corr = {m.properties["correlation_id"]: json.loads(m.body) for m in replies}
    assert by_corr.pop("corr-17")["status"] == 400
    for position, body in enumerate(bodies):
        if position == 17:
            continue
        i = int(json.loads(body)["request_id"].rsplit("-", 1)[1])
        answer = by_corr[f"corr-{position}"]
        assert answer["request_id"] == f"{prefix}-{i:03d}"
        assert answer["label"] == labels[i % 3]

    stored = _stored(cluster.url, prefix)
    assert [r[0] for r in stored] == [f"{prefix}-{i:03d}" for i in range(n)]
    assert [r[1] for r in stored] == [labels[i % 3] for i in range(n)]
    # Rows scored by one model call share its timestamp: 60 messages took a few calls, not 60.
    assert len({r[2] for r in stored}) <= 10
    # Every message was acknowledged: nothing went back to the queue when the consumer left.
    assert _ready(broker) == 0
    assert _ready(broker, "prediction_requests.dead_letter") == 1
    # One acknowledgement per batch (multiple), and one for the malformed message, not 61.
    assert acks.count(False) == 1 and 2 <= acks.count(True) <= 10, acks


def test_a_store_outage_acknowledges_none_of_the_batch_and_each_is_stored_once_later(
    runtime: Runtime, broker: str, cluster: PgCluster
) -> None:
    runtime.store.write([])  # the schema exists before the outage
    prefix = f"o-{uuid.uuid4().hex[:6]}"
    n = 30
    bodies: list[bytes | str] = [
        json.dumps({"request_id": f"{prefix}-{i:03d}", "features": PROTOTYPES[i % 3]})
        for i in range(n)
    ]
    with Connection(broker) as conn:
        reply = _reply_queue(conn)
        dead_before = _ready(broker, "prediction_requests.dead_letter")
        cluster.stop("immediate")
        try:
            _publish(broker, bodies, reply.name)
            first = PlainAmqpConsumer(runtime.settings, lambda: runtime, batch_messages=64)
            first.start()
            deadline = time.monotonic() + 20
            while _ready(broker) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _ready(broker) == 0, "the consumer holds the whole batch"
            time.sleep(1.0)  # a few retries against the stopped database
            first.stop()
            assert first._thread is not None and not first._thread.is_alive()
            # Nothing was answered, nothing acknowledged: all of it is back in the queue.
            assert _ready(broker) == n
            assert _ready(broker, "prediction_requests.dead_letter") == dead_before
        finally:
            cluster.start()
        second = PlainAmqpConsumer(runtime.settings, lambda: runtime)
        second.start()
        try:
            replies: list[Message] = drain(conn, reply, n)
        finally:
            second.stop()
    assert sorted(json.loads(m.body)["request_id"] for m in replies) == sorted(
        f"{prefix}-{i:03d}" for i in range(n)
    )
    stored = _stored(cluster.url, prefix)
    assert [r[0] for r in stored] == [f"{prefix}-{i:03d}" for i in range(n)]
    assert _ready(broker) == 0


def _concurrently(
    n: int, task: Callable[[int, Any], Any]
) -> tuple[dict[int, Any], dict[int, Exception]]:
    """`task(i, body)` on n threads released together, one body per prototype in turn and a
    malformed one (a single feature) at i = 5; what each returned or raised, by i."""
    returned: dict[int, Any] = {}
    raised: dict[int, Exception] = {}
    go = threading.Barrier(n)

    def run(i: int) -> None:
        go.wait()
        body: Any = {"features": PROTOTYPES[i % 3]} if i != 5 else {"features": [1.0]}
        try:
            returned[i] = task(i, body)
        except Exception as exc:
            raised[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return returned, raised


def test_the_task_batcher_stores_concurrent_requests_together_and_answers_each(
    runtime: Runtime, cluster: PgCluster
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:6]}"
    labels = _expected_labels(runtime)
    batcher = ScoringBatcher(lambda: runtime)
    answers, errors = _concurrently(24, lambda i, body: batcher.score(f"{prefix}-{i:03d}", body))
    batcher.stop()

    assert list(errors) == [5] and "expected 4 features" in str(errors[5])
    for i, answer in answers.items():
        assert answer["request_id"] == f"{prefix}-{i:03d}"
        assert answer["label"] == labels[i % 3]
    stored = _stored(cluster.url, prefix)
    assert [r[0] for r in stored] == [f"{prefix}-{i:03d}" for i in range(24) if i != 5]
    assert len({r[2] for r in stored}) < 23, "concurrent requests share model calls"


def test_the_task_batcher_fails_every_waiting_task_with_the_store_outage(
    runtime: Runtime, cluster: PgCluster
) -> None:
    runtime.store.write([])
    batcher = ScoringBatcher(lambda: runtime)
    cluster.stop("immediate")
    try:
        with pytest.raises(StoreUnavailable):
            batcher.score(f"u-{uuid.uuid4().hex[:6]}", {"features": PROTOTYPES[0]})
    finally:
        cluster.start()
    # The batcher outlives the outage: the next task is stored.
    request_id = f"u-{uuid.uuid4().hex[:6]}"
    assert batcher.score(request_id, {"features": PROTOTYPES[0]})["request_id"] == request_id
    batcher.stop()
    assert [r[0] for r in _stored(cluster.url, request_id)] == [request_id]


def test_task_states_written_at_once_are_all_stored_and_a_success_is_never_overwritten(
    cluster: PgCluster, broker: str, tmp_path: Path
) -> None:
    from celery import states

    from serving.worker import make_celery

    settings = Settings(data_dir=tmp_path / "data", database_url=cluster.url, broker_url=broker)
    backend = make_celery(settings).backend
    prefix = f"s-{uuid.uuid4().hex[:6]}"
    backend.store_result(f"{prefix}-warm", {"warm": True}, states.SUCCESS)  # creates the table
    go = threading.Barrier(32)

    def write(i: int) -> None:
        go.wait()
        backend.store_result(f"{prefix}-{i}", {"i": i}, states.SUCCESS)
        # A late state of the same task (a redelivered run failing) must not replace it.
        backend.store_result(f"{prefix}-{i}", ValueError("late"), states.FAILURE)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i in range(32):
        meta = backend.get_task_meta(f"{prefix}-{i}")
        assert meta["status"] == states.SUCCESS and meta["result"] == {"i": i}


def test_the_worker_app_has_one_result_backend_for_every_thread(
    cluster: PgCluster, broker: str, tmp_path: Path
) -> None:
    from serving.worker import make_celery

    app = make_celery(Settings(data_dir=tmp_path / "data", database_url=cluster.url))
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(app.backend))
    thread.start()
    thread.join(10)
    # Celery's default is one backend (one engine, one pool) per thread.
    assert seen == [app.backend]


def test_a_scoring_batch_commits_its_tasks_success_states_together_before_they_return(
    runtime: Runtime, cluster: PgCluster, broker: str, tmp_path: Path
) -> None:
    from functools import partial

    from celery import states

    from serving.worker import _commit_states, make_celery

    app = make_celery(Settings(data_dir=tmp_path / "data", database_url=cluster.url))
    backend = app.backend
    backend.store_result(f"w-{uuid.uuid4().hex[:6]}", {"warm": True}, states.SUCCESS)
    engine = next(iter(backend.session_manager._engines.values()))
    commits: list[str] = []
    sa.event.listen(engine, "commit", lambda conn: commits.append(threading.current_thread().name))
    batcher = ScoringBatcher(lambda: runtime, on_stored=partial(_commit_states, app))
    prefix = f"c-{uuid.uuid4().hex[:6]}"

    def task(i: int, body: Any) -> tuple[Any, Any]:
        task_id = f"{prefix}-{i:03d}"
        answer = batcher.score(task_id, body, task_id=task_id)
        # Already readable when the task returns (and Celery acknowledges it).
        return answer, backend.get_task_meta(task_id)

    found, errors = _concurrently(24, task)
    batcher.stop()

    assert list(errors) == [5]
    assert sorted(found) == [i for i in range(24) if i != 5]
    for answer, meta in found.values():
        assert meta["status"] == states.SUCCESS and meta["result"] == answer
    # The bad request's task has no state from the batch: Celery stores its failure.
    assert backend.get_task_meta(f"{prefix}-005")["status"] == states.PENDING
    assert set(commits) == {"score-batch"} and len(commits) < 23, "states share transactions"

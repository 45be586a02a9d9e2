"""Done-means 3: the database goes away in the middle of a load and comes back; every
prediction is stored exactly once. Runs against a throwaway PostgreSQL cluster the test stops
abruptly (`pg_ctl stop -m immediate`) and starts again on the same port."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.core.store import PredictionStore, StoreUnavailable
from tests.support.pgcluster import PgCluster, pg_cluster
from tests.support.store_records import CountingObserver, make_batch, make_record

pytestmark = pytest.mark.postgres

N = 2000
# Every tenth submission is a batch of 5 rows (make_batch).
ROWS = N + 4 * (N // 10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with pg_cluster() as cluster:
        yield cluster


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_database_outage_under_load_stores_every_prediction_exactly_once(
    cluster: PgCluster, tmp_path: Path
) -> None:
    observer = CountingObserver()
    store = PredictionStore(
        cluster.url, tmp_path / "spool", batch_size=100, flush_interval=0.05, observer=observer
    )
    store.start()
    submitted: list[str] = []
    outage_seen = threading.Event()

    def load() -> None:
        for i in range(N):
            if i % 10 == 0:  # a REST request of many rows: one batch, one chunk row
                batch = make_batch(i)
                store.submit_columns(batch)
                submitted.extend(batch.request_ids)
                continue
            record = make_record(i)
            store.submit(record)
            submitted.append(record.request_id)
            # Keep the load going through the whole outage rather than in one burst.
            time.sleep(0.0015 if not outage_seen.is_set() else 0.001)

    producer = threading.Thread(target=load, name="load")
    producer.start()
    try:
        wait_for(lambda: observer["written"] >= 300, 20, "rows written before the outage")
        cluster.stop("immediate")
        outage_seen.set()
        written_at_stop = observer["written"]
        wait_for(lambda: observer["spooled"] >= 200, 20, "rows spooled during the outage")
        with pytest.raises(StoreUnavailable):
            store.write([make_record(N + 1)])  # what a Celery task sees, and retries on
        assert len(submitted) < ROWS, "the outage must happen mid-load"
        cluster.start()
    finally:
        producer.join(60)
        if not cluster.running():
            cluster.start()

    assert store.flush(30), "queue and spool drain once the database is back"
    store.stop()

    engine = sa.create_engine(cluster.url)
    try:
        with engine.connect() as conn:
            total, distinct = conn.execute(
                sa.text("SELECT count(*), count(DISTINCT request_id) FROM prediction_rows")
            ).one()
            stored = {
                row[0] for row in conn.execute(sa.text("SELECT request_id FROM prediction_rows"))
            }
            chunks = conn.execute(sa.text("SELECT count(*) FROM prediction_chunks")).scalar()
    finally:
        engine.dispose()
    assert len(submitted) == ROWS
    assert (total, distinct) == (ROWS, ROWS)
    assert stored == set(submitted)
    assert chunks == N // 10  # every batch stored once, as one chunk row
    assert written_at_stop < ROWS
    assert observer["spooled"] > 0 and observer["replayed"] > 0
    assert observer["dropped"] == 0
    assert list((tmp_path / "spool").glob("*/*.jsonl")) == []

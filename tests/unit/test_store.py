"""Prediction store on SQLite: queue, batching, spool, replay, drop policy, restart."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.core.settings import PROJECT_ROOT, Settings
from lifecycle.core.store import PredictionStore, StoreUnavailable
from tests.support.store_records import CountingObserver, make_record


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def segments(spool: Path) -> list[Path]:
    return sorted(spool.glob("*/*.jsonl"))


def stored_ids_in_insert_order(db: Path) -> list[str]:
    # SQLite keeps an implicit rowid that grows with each insert: it shows the write order.
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT request_id FROM predictions ORDER BY rowid")]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def observer() -> CountingObserver:
    return CountingObserver()


@pytest.fixture
def stores() -> Iterator[list[PredictionStore]]:
    """Every store a test makes is stopped afterwards, even when the test fails."""
    made: list[PredictionStore] = []
    yield made
    for store in made:
        store.stop(timeout=2)


def test_write_is_idempotent_on_request_id(tmp_path: Path, stores: list[PredictionStore]) -> None:
    store = PredictionStore(sqlite_url(tmp_path / "p.db"), tmp_path / "spool")
    stores.append(store)
    records = [make_record(i) for i in range(25)]

    assert store.write(records) == 25
    assert store.write(records) == 0
    assert store.write([*records[:5], make_record(99)]) == 1
    assert store.count() == 26
    assert store.get(records[3].request_id) == records[3]
    assert store.get("missing") is None


def test_submitted_rows_reach_the_database_in_multi_row_inserts(
    tmp_path: Path, observer: CountingObserver, stores: list[PredictionStore]
) -> None:
    store = PredictionStore(
        sqlite_url(tmp_path / "p.db"), tmp_path / "spool", batch_size=50, observer=observer
    )
    stores.append(store)
    inserts: list[str] = []
    sa.event.listen(
        store._db.engine,
        "before_cursor_execute",
        lambda _c, _cur, stmt, *_a: (
            inserts.append(stmt) if "INSERT INTO predictions" in stmt else None
        ),
    )
    records = [make_record(i, source="async" if i % 4 == 0 else "rest") for i in range(230)]
    for record in records:
        store.submit(record)
    store.start()

    assert store.flush(10)
    assert store.count() == 230
    assert store.count(source="async") == 58
    assert observer["written"] == 230
    assert observer["spooled"] == 0
    assert observer.depths, "queue depth is reported to the observer"
    # 230 queued rows at batch size 50 need at least 5 statements, and far fewer than 230.
    assert 5 <= len(inserts) <= 10
    assert store.get(records[17].request_id) == records[17]
    assert [r.request_id for r in store.recent(3, source="async")] == [
        r.request_id for r in reversed(records) if r.source == "async"
    ][:3]


def test_sqlite_store_runs_in_wal_mode(tmp_path: Path, stores: list[PredictionStore]) -> None:
    store = PredictionStore(sqlite_url(tmp_path / "p.db"), tmp_path / "spool")
    stores.append(store)
    store.write([make_record(1)])
    with sqlite3.connect(tmp_path / "p.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_spool_while_database_is_unusable_and_replay_in_order(
    tmp_path: Path, observer: CountingObserver, stores: list[PredictionStore]
) -> None:
    db_dir = tmp_path / "not-yet"  # SQLite cannot open a file in a folder that does not exist
    spool = tmp_path / "spool"
    store = PredictionStore(
        sqlite_url(db_dir / "p.db"), spool, batch_size=40, flush_interval=0.02, observer=observer
    )
    stores.append(store)
    store.start()
    outage = [make_record(i) for i in range(300)]
    for record in outage:
        store.submit(record)

    wait_for(lambda: observer["spooled"] == 300)
    assert not store.flush(0.3)
    assert segments(spool), "spooled rows are on disk"
    with pytest.raises(StoreUnavailable):
        store.write([make_record(1000)])
    with pytest.raises(StoreUnavailable):
        store.count()

    db_dir.mkdir()
    after = [make_record(i) for i in range(300, 350)]
    for record in after:
        store.submit(record)
    assert store.flush(10)

    assert store.count() == 350
    assert observer["replayed"] >= 300
    assert observer["dropped"] == 0
    assert segments(spool) == []
    assert stored_ids_in_insert_order(db_dir / "p.db") == [r.request_id for r in outage + after]


def test_full_queue_spools_instead_of_blocking(
    tmp_path: Path, observer: CountingObserver, stores: list[PredictionStore]
) -> None:
    spool = tmp_path / "spool"
    store = PredictionStore(sqlite_url(tmp_path / "p.db"), spool, queue_size=2, observer=observer)
    stores.append(store)
    records = [make_record(i) for i in range(10)]

    started = time.monotonic()
    for record in records:  # the writer is not running: the queue fills after two rows
        store.submit(record)
    assert time.monotonic() - started < 2

    assert observer["spooled"] == 8
    assert 2 in observer.depths, "a full queue shows in the queue depth"
    assert len(segments(spool)) == 1
    store.start()
    assert store.flush(10)
    assert {r.request_id for r in store.recent(20)} == {r.request_id for r in records}
    assert segments(spool) == []


def test_full_queue_and_full_spool_drop_counted_and_logged_once(
    tmp_path: Path,
    observer: CountingObserver,
    stores: list[PredictionStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    line = len(make_record(0).to_json_line())
    store = PredictionStore(
        sqlite_url(tmp_path / "p.db"),
        tmp_path / "spool",
        queue_size=1,
        spool_max_bytes=int(2.5 * line),
        observer=observer,
    )
    stores.append(store)

    with caplog.at_level(logging.WARNING, logger="lifecycle.core.store"):
        for i in range(10):
            store.submit(make_record(i))

    assert (observer["spooled"], observer["dropped"]) == (2, 7)
    drop_logs = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_logs) == 1, "drops are logged, but rate-limited"
    assert drop_logs[0].levelno == logging.WARNING
    store.start()
    assert store.flush(10)
    assert store.count() == 3


def test_restart_replays_the_spool_left_by_a_stopped_store(
    tmp_path: Path, observer: CountingObserver, stores: list[PredictionStore]
) -> None:
    db_dir, spool = tmp_path / "db", tmp_path / "spool"
    first = PredictionStore(sqlite_url(db_dir / "p.db"), spool, flush_interval=0.02)
    first.start()
    records = [make_record(i) for i in range(120)]
    for record in records:
        first.submit(record)
    first.stop(timeout=5)
    assert segments(spool)

    db_dir.mkdir()
    second = PredictionStore(sqlite_url(db_dir / "p.db"), spool, observer=observer)
    stores.append(second)
    second.start()
    assert second.flush(10)
    assert stored_ids_in_insert_order(db_dir / "p.db") == [r.request_id for r in records]
    assert observer["replayed"] == 120
    assert segments(spool) == []


def test_spool_of_a_killed_process_is_replayed_once_by_the_next_store(
    tmp_path: Path, stores: list[PredictionStore]
) -> None:
    db_dir, spool = tmp_path / "db", tmp_path / "spool"
    script = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from lifecycle.core.store import PredictionStore
        from tests.support.store_records import make_record
        url, spool = {sqlite_url(db_dir / "p.db")!r}, Path({str(spool)!r})
        store = PredictionStore(url, spool, flush_interval=0.02)
        store.start()
        for i in range(200):
            store.submit(make_record(i, request_id=f"crash-{{i}}"))
        while store._queue.unfinished_tasks or store._spool.pending_bytes == 0:
            time.sleep(0.01)
        os._exit(9)  # no stop(): the process dies with its spool on disk
        """
    )
    subprocess.run([sys.executable, "-c", script], check=False, timeout=60, cwd=PROJECT_ROOT)
    assert segments(spool), "the killed process left its spool behind"

    db_dir.mkdir()
    store = PredictionStore(sqlite_url(db_dir / "p.db"), spool)
    stores.append(store)
    store.start()
    assert store.flush(10)
    ids = stored_ids_in_insert_order(db_dir / "p.db")
    assert sorted(ids) == sorted(f"crash-{i}" for i in range(200))
    assert ids == [f"crash-{i}" for i in range(200)]
    assert segments(spool) == []


def test_a_live_store_keeps_its_spool_from_other_stores(
    tmp_path: Path, stores: list[PredictionStore]
) -> None:
    spool = tmp_path / "spool"
    down = PredictionStore(sqlite_url(tmp_path / "missing" / "p.db"), spool, flush_interval=0.02)
    stores.append(down)
    down.start()
    for i in range(20):
        down.submit(make_record(i))
    wait_for(lambda: len(segments(spool)) > 0 and down._queue.empty())

    up = PredictionStore(sqlite_url(tmp_path / "up.db"), spool)
    up.start()
    assert up.flush(5)
    assert up.count() == 0, "rows spooled by a live process are its own to replay"
    up.stop()

    down.stop()  # now its spool is an orphan: the next store takes it over
    later = PredictionStore(sqlite_url(tmp_path / "up.db"), spool)
    stores.append(later)
    later.start()
    assert later.flush(10)
    assert later.count() == 20


def test_submit_after_stop_keeps_the_row_on_disk(
    tmp_path: Path, stores: list[PredictionStore]
) -> None:
    spool = tmp_path / "spool"
    store = PredictionStore(sqlite_url(tmp_path / "p.db"), spool)
    store.start()
    store.stop()
    store.submit(make_record(1, request_id="late"))
    assert segments(spool)

    again = PredictionStore(sqlite_url(tmp_path / "p.db"), spool)
    stores.append(again)
    store._spool.close()  # the process that spooled it is gone
    again.start()
    assert again.flush(10)
    assert again.get("late") is not None


def test_from_settings_uses_data_dir_for_database_and_spool(
    tmp_path: Path, stores: list[PredictionStore]
) -> None:
    settings = Settings(
        data_dir=tmp_path / "home",
        database_url=None,
        prediction_queue_size=3,
        prediction_batch_size=7,
        prediction_flush_interval=0.05,
    )
    store = PredictionStore.from_settings(settings)
    stores.append(store)
    store.start()
    store.submit(make_record(1))
    assert store.flush(5)
    assert (tmp_path / "home" / "lifecycle.db").exists()
    assert (tmp_path / "home" / "spool").is_dir()
    assert store.count() == 1


def test_a_row_the_database_rejects_is_dropped_and_counted_not_the_batch(
    tmp_path: Path, observer: CountingObserver, stores: list[PredictionStore]
) -> None:
    store = PredictionStore(sqlite_url(tmp_path / "p.db"), tmp_path / "spool", observer=observer)
    stores.append(store)
    good = [make_record(i) for i in range(4)]
    bad = dataclasses.replace(make_record(9), features={"x": object()})  # not JSON

    assert store.write([good[0], good[1], bad, good[2], good[3]]) == 4

    assert store.count() == 4
    assert store.get(bad.request_id) is None
    assert observer["dropped"] == 1


def test_a_down_database_is_probed_with_backoff_not_in_a_hot_loop(
    tmp_path: Path, observer: CountingObserver, stores: list[PredictionStore]
) -> None:
    store = PredictionStore(
        sqlite_url(tmp_path / "missing" / "p.db"),
        tmp_path / "spool",
        flush_interval=0.01,
        observer=observer,
    )
    stores.append(store)
    attempts: list[float] = []
    sa.event.listen(store._db.engine, "do_connect", lambda *_a: attempts.append(time.monotonic()))
    store.start()
    deadline = time.monotonic() + 1.5
    i = 0
    while time.monotonic() < deadline:  # a steady load, one writer cycle per 10 ms
        store.submit(make_record(i))
        i += 1
        time.sleep(0.005)

    # Backoff 0.25 s, 0.5 s, 1 s: a handful of attempts in 1.5 s instead of ~150.
    assert 2 <= len(attempts) <= 8, attempts
    wait_for(lambda: observer["spooled"] == i)

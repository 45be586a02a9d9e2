"""The request path never waits on the spool, and a saturated prediction log refuses requests
(counted) instead of blocking them or answering predictions it could not keep.

The writer and the spool are stalled for real by holding the locks they take for their I/O,
as a database stuck in a slow commit and a disk stuck in a long fsync would hold them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lifecycle.core.store import PredictionRecord, PredictionStore
from lifecycle.core.store.columns import PredictionColumns
from lifecycle.core.store.writer import PredictionLogSaturated
from tests.support.store_records import CountingObserver, make_batch, make_record


@pytest.fixture
def observer() -> CountingObserver:
    return CountingObserver()


@pytest.fixture
def store(tmp_path: Path, observer: CountingObserver) -> Iterator[PredictionStore]:
    store = PredictionStore(
        f"sqlite:///{tmp_path / 'p.db'}",
        tmp_path / "spool",
        queue_size=5,
        flush_interval=0.02,
        observer=observer,
    )
    store.start()
    yield store
    store.stop(timeout=5)


def _ids(records: list[PredictionRecord]) -> set[str]:
    return {r.request_id for r in records}


def _stored(store: PredictionStore, records: list[PredictionRecord]) -> set[str]:
    return {r.request_id for r in records if store.get(r.request_id) is not None}


def _stall_writer(store: PredictionStore, records: int) -> threading.Lock:
    """Hold the writer's I/O lock and let it take `records` rows off the queue, so that the
    queue then fills as if the database were stuck in a commit."""
    io_lock: threading.Lock = store._io_lock
    io_lock.acquire()
    store.submit_many([make_record(900 + i) for i in range(records)])
    deadline = time.monotonic() + 5
    while store._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert store._queue.qsize() == 0, "the writer took the first rows and waits on its lock"
    return io_lock


@contextmanager
def _writer_and_spool_stalled(store: PredictionStore) -> Iterator[None]:
    """The writer holding 3 rows behind its stuck I/O lock, and the spool stuck in an
    append, until the block ends."""
    io_lock = _stall_writer(store, 3)
    spool_lock: threading.Lock = store._spool._lock
    spool_lock.acquire()
    try:
        yield
    finally:
        spool_lock.release()
        io_lock.release()


def _submit_in_thread(store: PredictionStore, records: list[PredictionRecord]) -> threading.Thread:
    thread = threading.Thread(target=lambda: [store.submit(r) for r in records], daemon=True)
    thread.start()
    return thread


def test_submit_returns_while_the_spool_is_stalled(
    store: PredictionStore, observer: CountingObserver
) -> None:
    with _writer_and_spool_stalled(store):
        # 5 rows fill the queue, the next 5 go past it: none of them may wait on the spool.
        records = [make_record(i) for i in range(10)]
        submitter = _submit_in_thread(store, records)
        submitter.join(2)
        assert not submitter.is_alive(), "submit() waited on the stalled spool"
        assert store._queue.qsize() == 5

    assert store.flush(10)
    assert store.count() == 13
    assert _stored(store, records) == _ids(records)
    assert observer["spooled"] == 5
    assert observer["dropped"] == 0


def test_a_saturated_log_refuses_the_request_and_counts_it(
    store: PredictionStore, observer: CountingObserver
) -> None:
    with _writer_and_spool_stalled(store):
        admitted = [make_record(i) for i in range(10)]
        store.submit_many(admitted[:5])  # the queue
        store.submit_many(admitted[5:])  # the overflow, stuck behind the spool
        assert not store.saturated(0)
        assert store.saturated(1)

        refused = [make_record(i) for i in range(100, 102)]
        started = time.perf_counter()
        with pytest.raises(PredictionLogSaturated) as caught:
            store.submit_many(refused)
        assert time.perf_counter() - started < 0.5, "refusing must not wait either"
        assert caught.value.status_code == 503
        assert observer["shed"] == 2

    assert store.flush(10)
    assert store.count() == 13, "every admitted row is stored, once"
    assert _stored(store, admitted) == _ids(admitted)
    assert not _stored(store, refused)
    assert observer["dropped"] == 0
    # Once the writer catches up, requests are admitted again.
    store.submit_many(refused)
    assert store.flush(10)
    assert _stored(store, refused) == _ids(refused)


def test_a_nearly_full_spool_refuses_before_rows_would_be_dropped(
    tmp_path: Path, observer: CountingObserver
) -> None:
    queued = [make_record(i) for i in range(5)]
    spilled = [make_record(i) for i in range(5, 9)]
    store = PredictionStore(
        f"sqlite:///{tmp_path / 'p.db'}",
        tmp_path / "spool",
        queue_size=5,
        flush_interval=0.02,
        # 90 % of it holds the spilled rows and a little more, not one more row: admission
        # reserves spool space up to 90 % of the limit.
        spool_max_bytes=int(sum(len(r.to_json_line()) for r in spilled) / 0.9) + 50,
        observer=observer,
    )
    store.start()
    try:
        io_lock = _stall_writer(store, 1)
        try:
            store.submit_many(queued)
            store.submit_many(spilled)  # the queue is full: through the spiller to the spool
            deadline = time.monotonic() + 5
            while len(store._overflow) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert observer["spooled"] == 4
            with pytest.raises(PredictionLogSaturated):
                store.submit_many([make_record(50)])
        finally:
            io_lock.release()
        assert store.flush(10)
        assert store.count() == 10
        assert observer["dropped"] == 0
    finally:
        store.stop(timeout=5)


def test_admission_reserves_spool_space_for_rows_on_their_way_to_it(
    tmp_path: Path, observer: CountingObserver
) -> None:
    """The spool 85 % full and the spiller stuck in a long fsync: rows admitted now wait in
    the overflow, so a request is admitted only if the spool can hold it and every row ahead
    of it. Every admitted row is stored, none is dropped, and refused rows are missing."""
    line = max(len(make_record(i).to_json_line()) for i in range(100))
    store = PredictionStore(
        f"sqlite:///{tmp_path / 'p.db'}",
        tmp_path / "spool",
        queue_size=5,
        flush_interval=0.02,
        spool_max_bytes=20 * line,
        observer=observer,
    )
    store.start()
    admitted = [make_record(i) for i in range(22)]
    later = [make_record(i) for i in range(50, 55)]
    try:
        io_lock = _stall_writer(store, 3)
        spool_lock: threading.Lock = store._spool._lock
        try:
            for record in admitted:  # 5 fill the queue, 17 go through the overflow
                store.submit_many([record])
                deadline = time.monotonic() + 5
                while len(store._overflow) and time.monotonic() < deadline:
                    time.sleep(0.001)
            assert observer["spooled"] == 17
            spool_lock.acquire()
            try:
                for record in later:
                    try:
                        store.submit_many([record])
                    except PredictionLogSaturated:
                        continue
                    admitted.append(record)
            finally:
                spool_lock.release()
        finally:
            io_lock.release()
        assert store.flush(10)
        assert observer["dropped"] == 0
        assert _stored(store, admitted) == _ids(admitted)
        assert observer["shed"] >= 3  # the spool had room for at most two more rows
        assert store.count() == 3 + len(admitted)
    finally:
        store.stop(timeout=5)


def test_a_request_of_many_rows_returns_while_the_spool_is_stalled(
    store: PredictionStore, observer: CountingObserver
) -> None:
    outcomes: list[str] = []

    def submit(batches: list[PredictionColumns]) -> None:
        for batch in batches:
            try:
                store.submit_columns(batch)
                outcomes.append("queued")
            except PredictionLogSaturated:
                outcomes.append("refused")

    with _writer_and_spool_stalled(store):
        # 5-row requests, each one batch: the first fills the queue (5 predictions), the
        # second the overflow (5 more), the third finds no room and is refused; none waits.
        batches = [make_batch(i) for i in range(3)]
        submitter = threading.Thread(target=submit, args=(batches,), daemon=True)
        submitter.start()
        submitter.join(2)
        assert not submitter.is_alive(), "submit_columns() waited on the stalled spool"
        assert outcomes == ["queued", "queued", "refused"]
        assert store._queue.qsize() == 5

    assert store.flush(10)
    ids = [rid for b in batches[:2] for rid in b.request_ids]
    assert all(store.get(rid) is not None for rid in ids)
    assert store.get(batches[2].request_ids[0]) is None
    assert store.count() == 3 + 10
    assert observer["spooled"] == 5 and observer["shed"] == 5 and observer["dropped"] == 0

"""Which rows the prediction log looks up by request id (PredictionRecord.recheck) on
PostgreSQL: a flagged row is caught when it comes again with another created_at, an unflagged
one relies on the key (request_id, created_at) alone, on every write path (COPY batch, COPY
from columns, the staged multi-row INSERT, one row) and through a spool replay. SQLite keeps
the request id as its key, so the flag changes nothing there."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from lifecycle.core.store import PredictionRecord, PredictionStore
from lifecycle.core.store.columns import PredictionColumns
from lifecycle.core.store.database import PredictionDatabase
from tests.support.store_records import CountingObserver, make_record

NOW = datetime.now(UTC).replace(microsecond=0)
LATER = NOW + timedelta(minutes=5)
# The write paths of a batch: COPY (psycopg2), and the staged multi-row INSERT (other drivers).
PATHS = ["copy", "staged"]


def _db(url: str, path: str = "copy") -> PredictionDatabase:
    db = PredictionDatabase(url, on_rejected=lambda _: None)
    db._copy = db._copy and path == "copy"
    return db


def _rows(prefix: str, n: int, *, recheck: bool, at: datetime = NOW) -> list[PredictionRecord]:
    return [
        dataclasses.replace(
            make_record(i, request_id=f"{prefix}-{i}"), created_at=at, recheck=recheck
        )
        for i in range(n)
    ]


def _at(records: list[PredictionRecord], when: datetime) -> list[PredictionRecord]:
    return [dataclasses.replace(r, created_at=when) for r in records]


def _counts(url: str, prefix: str) -> list[int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            sql = (
                "SELECT count(*) FROM predictions WHERE request_id LIKE :p "
                "GROUP BY request_id ORDER BY request_id"
            )
            return [int(n) for (n,) in conn.execute(sa.text(sql), {"p": f"{prefix}-%"})]
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("path", PATHS)
def test_an_unflagged_batch_stores_once_and_again_with_its_time_stores_nothing(
    pg_url: str, path: str
) -> None:
    db = _db(pg_url, path)
    rows = _rows("fresh", 5, recheck=False)
    assert db.insert(rows) == 5
    assert db.insert(rows) == 0  # replayed or re-inserted: the same created_at, the key
    assert db.insert([rows[2]]) == 0  # one row
    # The same request id twice in one batch, with its one time.
    twice = _rows("twice", 3, recheck=False)
    assert db.insert([*twice, twice[1]]) == 3
    db.dispose()
    assert _counts(pg_url, "fresh") == [1] * 5
    assert _counts(pg_url, "twice") == [1] * 3


@pytest.mark.postgres
@pytest.mark.parametrize("path", PATHS)
def test_a_flagged_row_sent_again_with_another_time_stores_nothing_more(
    pg_url: str, path: str
) -> None:
    db = _db(pg_url, path)
    flagged = _rows("task", 4, recheck=True)
    assert db.insert(flagged) == 4
    again = _at(flagged, LATER)
    # In a batch beside unflagged rows, and alone as one row.
    assert db.insert([*again[:3], *_rows("beside", 3, recheck=False)]) == 3
    assert db.insert([again[3]]) == 0
    # A flagged copy is caught whatever flag the stored row had.
    keyed = _rows("keyed", 2, recheck=False)
    assert db.insert(keyed) == 2
    assert db.insert([dataclasses.replace(r, recheck=True) for r in _at(keyed, LATER)]) == 0
    db.dispose()
    assert _counts(pg_url, "task") == [1] * 4
    assert _counts(pg_url, "beside") == [1] * 3
    assert _counts(pg_url, "keyed") == [1] * 2


@pytest.mark.postgres
@pytest.mark.parametrize("path", PATHS)
def test_an_unflagged_row_is_not_looked_up(pg_url: str, path: str) -> None:
    """What the flag means: an unflagged copy with another created_at is not looked for (its
    request id must never come with another time: the server generated it)."""
    db = _db(pg_url, path)
    rows = _rows("unique", 3, recheck=False)
    assert db.insert(rows) == 3
    assert db.insert(_at(rows, LATER)) == 3
    assert db.insert(_at([rows[0]], LATER + timedelta(minutes=1))) == 1
    db.dispose()
    assert _counts(pg_url, "unique") == [3, 2, 2]


def test_sqlite_keys_on_the_request_id_whatever_the_flag(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    db = _db(url)
    rows = _rows("lite", 3, recheck=False)
    assert db.insert(rows) == 3
    assert db.insert(_at(rows, LATER)) == 0
    assert db.insert(_at([rows[1]], LATER)) == 0
    db.dispose()
    assert _counts(url, "lite") == [1] * 3


def _columns(prefix: str, n: int, at: datetime, *, recheck: bool) -> PredictionColumns:
    return PredictionColumns(
        request_ids=[f"{prefix}-{i}" for i in range(n)],
        created_at=at,
        source="batch",
        model_name="iris-classifier",
        model_version="1",
        run_id=None,
        feature_names=("a", "b"),
        features=np.arange(2 * n, dtype=np.float64).reshape(n, 2),
        predictions=np.arange(n) % 3,
        labels=[str(i % 3) for i in range(n)],
        class_labels=None,
        probabilities=None,
        latency_ms=0.5,
        recheck=recheck,
    )


def test_a_columnar_batch_carries_its_flag(any_url: str) -> None:
    db = _db(any_url)
    job = _columns("job", 6, NOW, recheck=False)
    assert db.insert_columns(job) == 6
    assert db.insert_columns(job) == 0  # the job run again, stamped with the same time
    assert all(not r.recheck for r in job.records())
    flagged = _columns("spark", 4, NOW, recheck=True)
    assert db.insert_columns(flagged) == 4
    assert db.insert_columns(dataclasses.replace(flagged, created_at=LATER)) == 0
    db.dispose()
    assert _counts(any_url, "job") == [1] * 6
    assert _counts(any_url, "spark") == [1] * 4


@pytest.mark.postgres
def test_a_spool_replay_of_unflagged_rows_stores_nothing_more(pg_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    rows = _rows("spooled", 30, recheck=False)
    first = PredictionStore(pg_url, spool, flush_interval=0.02)
    first.start()
    first.stop()
    for record in rows:  # after stop: straight to the spool, replayed by the next start
        first.submit(record)
    lines = [json.loads(line) for f in sorted(spool.rglob("*.jsonl")) for line in f.open()]
    assert len(lines) == 30 and all(line["recheck"] is False for line in lines)
    assert PredictionRecord.from_row(lines[0]).recheck is False
    assert PredictionRecord.from_row({**lines[0], "recheck": None}).recheck is True

    # The rows reached the database another way first (a commit cut off after it landed).
    direct = PredictionStore(pg_url, tmp_path / "other-spool")
    assert direct.write(rows[:20]) == 20
    direct.stop()

    observer = CountingObserver()
    again = PredictionStore(pg_url, spool, observer=observer)
    first._spool.close()  # the process that spooled them is gone
    again.start()
    try:
        assert again.flush(10)
    finally:
        again.stop()
    assert observer["replayed"] == 30
    assert _counts(pg_url, "spooled") == [1] * 30

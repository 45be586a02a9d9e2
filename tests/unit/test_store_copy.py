"""The PostgreSQL bulk path of the prediction log (COPY into a staging table, then one
INSERT ... SELECT ... ON CONFLICT DO NOTHING): the same stored values as the INSERT path,
exactly once, and a row the database rejects is dropped alone."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from lifecycle.core.store import PredictionStore
from lifecycle.core.store.copy import STAGE
from tests.support.services import temp_database
from tests.support.store_records import CountingObserver, make_record

pytestmark = pytest.mark.postgres


@pytest.fixture
def database() -> Iterator[str]:
    with temp_database("lc_copy") as url:
        yield url


@pytest.fixture
def store(database: str, tmp_path: Path) -> Iterator[PredictionStore]:
    store = PredictionStore(database, tmp_path / "spool", observer=CountingObserver())
    yield store
    store.stop(timeout=2)


def _awkward(i: int) -> list:
    """Values a CSV writer can get wrong: quotes, commas, newlines, backslashes, an empty
    string beside a NULL, unicode, NaN and numpy scalars."""
    base = make_record(i)
    return [
        dataclasses.replace(base, label='say "hi", then\nleave \\N', run_id=None),
        dataclasses.replace(
            make_record(i + 1),
            label="",
            prediction=np.int64(2),
            probabilities={"a": math.nan, "b": np.float32(0.5)},
            features={"naïve": "x,y", "n": None, "q": '"'},
        ),
        dataclasses.replace(make_record(i + 2), prediction=None, probabilities=None, label=None),
    ]


def _stored(database: str, ids: list[str]) -> list[tuple]:
    sql = (
        "SELECT source, model_name, model_version, run_id, features::text, prediction::text, "
        "label, probabilities::text, latency_ms, created_at FROM predictions "
        "WHERE request_id = :id"
    )
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            return [tuple(conn.execute(sa.text(sql), {"id": i}).one()) for i in ids]
    finally:
        engine.dispose()


def test_copy_stores_exactly_what_the_insert_path_stores(
    store: PredictionStore, database: str
) -> None:
    copied = _awkward(0)
    inserted = [dataclasses.replace(r, request_id=r.request_id + "-one") for r in copied]

    assert store.write(copied) == 3  # a batch: COPY
    for record in inserted:  # one row at a time: the INSERT
        assert store.write([record]) == 1

    assert _stored(database, [r.request_id for r in copied]) == _stored(
        database, [r.request_id for r in inserted]
    )
    back = store.get(copied[0].request_id)
    assert back is not None and back.label == 'say "hi", then\nleave \\N' and back.run_id is None
    empty = store.get(copied[1].request_id)
    assert empty is not None and empty.label == "" and empty.prediction == 2
    assert empty.probabilities == {"a": None, "b": 0.5}


def test_batches_go_through_the_staging_table(store: PredictionStore, database: str) -> None:
    assert store.write([make_record(i) for i in range(5)]) == 5
    with store._db.engine.connect() as conn:  # the pool hands back the connection used
        assert conn.execute(sa.text(f"SELECT to_regclass('pg_temp.{STAGE}')")).scalar()
        # Emptied at commit: the next batch never sees this one's rows.
        assert conn.execute(sa.text(f"SELECT count(*) FROM pg_temp.{STAGE}")).scalar() == 0


def test_replays_and_repeats_are_stored_once(store: PredictionStore) -> None:
    first = [make_record(i) for i in range(100)]
    assert store.write(first) == 100
    again = first[50:] + [make_record(i) for i in range(100, 150)]
    assert store.write(again) == 50
    a, b = make_record(200), make_record(201)
    assert store.write([a, b, a]) == 2  # one id twice in one batch
    assert store.count() == 152


def test_a_row_the_database_rejects_is_dropped_alone(database: str, tmp_path: Path) -> None:
    observer = CountingObserver()
    store = PredictionStore(database, tmp_path / "spool", observer=observer)
    try:
        good = [make_record(i) for i in range(4)]
        bad = dataclasses.replace(make_record(9), label="nul\x00byte")  # PostgreSQL text: no NUL
        assert store.write([good[0], good[1], bad, good[2], good[3]]) == 4
        assert store.count() == 4
        assert store.get(bad.request_id) is None
        assert observer["dropped"] == 1
    finally:
        store.stop(timeout=2)


def _keyed(records: list) -> list:
    """Records whose key alone decides (request ids the server made): `recheck` off."""
    return [dataclasses.replace(r, recheck=False) for r in records]


def _staged(store: PredictionStore) -> bool:
    """Whether the pooled connection has used the staging table (created on first use)."""
    with store._db.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT to_regclass('pg_temp.{STAGE}')")).scalar() is not None


def test_keyed_batches_are_copied_straight_into_predictions(
    store: PredictionStore, database: str
) -> None:
    copied = _keyed(_awkward(0))
    assert store.write(copied) == 3
    assert not _staged(store), "no staging table for a batch the key alone decides"
    inserted = [dataclasses.replace(r, request_id=r.request_id + "-one") for r in copied]
    for record in inserted:
        assert store.write([record]) == 1
    assert _stored(database, [r.request_id for r in copied]) == _stored(
        database, [r.request_id for r in inserted]
    )


def test_a_keyed_batch_holding_stored_rows_falls_back_to_the_staging_table(
    store: PredictionStore,
) -> None:
    first = _keyed([make_record(i) for i in range(100)])
    assert store.write(first) == 100
    assert not _staged(store)
    # A replay (the same keys) with new rows: the direct COPY fails on the first stored key
    # and stores nothing; the staging table then stores the new ones.
    again = first[50:] + _keyed([make_record(i) for i in range(100, 150)])
    assert store.write(again) == 50
    assert _staged(store)
    a, b = _keyed([make_record(200), make_record(201)])
    assert store.write([a, b, a]) == 2  # one key twice in one batch
    assert store.count() == 152

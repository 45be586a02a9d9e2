"""PostgreSQL stores a batch of numbered request ids (a file job's chunk) as one row of
`prediction_chunks`, and everything that reads the log reads its predictions as it reads
rows: the same stored values, lookups by request id, feedback, pages, windows, quality,
retention; each prediction exactly once."""

from __future__ import annotations

import dataclasses
import json
import queue
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionStore, migrate
from lifecycle.core.store.chunks import chunk_key, numbered
from lifecycle.core.store.columns import PredictionColumns, RowQueue, rows_in
from lifecycle.core.store.database import PredictionDatabase
from lifecycle.core.store.partitions import (
    CHUNKS,
    default_partition,
    ensure_day_partitions,
    partition_name,
)
from lifecycle.core.store.read import PredictionReader
from lifecycle.core.store.spool import Spool
from serving.api.app import create_app
from serving.runtime import ModelHolder, ModelTarget
from tests.support.fixed_model import FixedVersion, load_iris
from tests.support.services import temp_database
from tests.support.store_records import CountingObserver
from tests.unit.test_store_columns import FEATURES, _columns
from tests.unit.test_store_columns import _stored as stored_values
from tests.unit.test_store_layout import _scalar

pytestmark = pytest.mark.postgres


def _chunk(
    prefix: str, first: int = 0, at: datetime | None = None, **changes: object
) -> PredictionColumns:
    batch = _columns("unused")
    n = len(batch)
    fields: dict[str, object] = {"numbered": (prefix, first), **changes}
    return dataclasses.replace(
        batch,
        request_ids=[f"{prefix}{first + i}" for i in range(n)],
        created_at=at or batch.created_at,
        **fields,
    )


@pytest.fixture
def url() -> Iterator[str]:
    with temp_database("lc_chunks") as database:
        yield database


@pytest.fixture
def store(url: str, tmp_path: Path) -> Iterator[PredictionStore]:
    store = PredictionStore(url, tmp_path / "spool", observer=CountingObserver())
    yield store
    store.stop(timeout=2)


def _stored(url: str, ids: list[str], table: str = "prediction_rows") -> list[tuple[object, ...]]:
    return stored_values(url, ids, table)


@pytest.mark.parametrize("probabilities", [True, False])
def test_a_numbered_batch_is_one_chunk_row_read_back_as_the_row_path_stores_it(
    store: PredictionStore, url: str, probabilities: bool
) -> None:
    chunk = _chunk("job-", 10)
    if not probabilities:
        chunk = dataclasses.replace(chunk, class_labels=None, probabilities=None)
    rows = dataclasses.replace(chunk, request_ids=[f"row-{i}" for i in range(4)], numbered=None)

    assert store.write_columns(chunk) == 4
    assert store.write(rows.records()) == 4
    assert _scalar(url, "SELECT count(*) FROM prediction_chunks") == 1
    assert _scalar(url, "SELECT count(*) FROM predictions WHERE request_id LIKE 'job-%'") == 0

    assert _stored(url, list(chunk.request_ids)) == _stored(url, list(rows.request_ids))
    back = store.get("job-11")
    assert back is not None and back.features[FEATURES[0]] is None  # NaN: JSON null
    assert back.features[FEATURES[1]] == 123456789.5 and back.label == 'vir"ginica'
    assert back.prediction == 2 and back.run_id is None
    assert store.get("job-14") is None and store.get("job-9") is None
    assert store.count() == 8


def test_a_chunk_is_stored_once_however_often_its_rows_are_written(
    store: PredictionStore, url: str
) -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    keyed = _chunk("job-", 0, at, recheck=False)
    assert store.write_columns(keyed) == 4
    assert store.write_columns(keyed) == 0  # a redelivered job, stamped with its accepted time
    # Chunked otherwise on the next delivery: rows 2..5 overlap rows 0..3.
    assert store.write_columns(_chunk("job-", 2, at, recheck=False)) == 0
    assert store.write_columns(_chunk("job-", 4, at, recheck=False)) == 4  # new rows

    looked_up = _chunk("other-", 0, at)
    assert store.write_columns(looked_up) == 4
    # Scored again later, with no accepted time: the same ids within DEDUP_WINDOW.
    assert store.write_columns(_chunk("other-", 0, at + timedelta(hours=5))) == 0
    assert store.write_columns(_chunk("other-", 0, at + timedelta(days=2))) == 4
    ids = _scalar(url, "SELECT count(DISTINCT request_id) FROM prediction_rows")
    assert ids == 12 and store.count() == 16


def test_feedback_pages_windows_and_quality_read_chunks_and_rows_alike(
    store: PredictionStore, url: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    batches = [_chunk("job-", 4 * k, now - timedelta(seconds=10 - k)) for k in range(3)]
    for batch in batches:  # three chunks of 4, a second apart, and 4 plain rows in between
        store.write_columns(batch)
    plain = _chunk("rest-", 0, now - timedelta(seconds=9, milliseconds=500), numbered=None)
    store.write(plain.records())
    keys = [(b.created_at, i) for b in (*batches, plain) for i in b.request_ids]

    store.add_feedback("job-5", "setosa")  # predicted vir"ginica
    store.add_feedback("job-0", "setosa")  # predicted setosa
    store.add_feedback("rest-0", "setosa")
    assert store.feedback_stats("iris-classifier")["7"]["n"] == 3

    reader = PredictionReader(url)
    try:
        seen: list[str] = []
        before = None
        while True:
            page = reader.page("iris-classifier", limit=5, before=before)
            if not page:
                break
            seen += [row["request_id"] for row in page]
            before = (page[-1]["created_at"], page[-1]["request_id"])
        # Newest first, ties on created_at by request id (text): as for rows.
        assert seen == [i for _, i in sorted(keys, reverse=True)]
        assert seen[:4] == ["job-9", "job-8", "job-11", "job-10"] and seen[8] == "rest-3"
        window = reader.window("iris-classifier")
        assert len(window) == 16 and window["request_id"].is_unique
        assert window.set_index("request_id").loc["job-5", "feedback"] == "setosa"
        assert window[FEATURES[1]].tolist()[:2] == [3.5, 123456789.5]
        quality = reader.quality("iris-classifier").set_index("model_version")
        assert quality.loc["7", "n"] == 3 and quality.loc["7", "correct"] == 2
        labelled = reader.labelled("iris-classifier")
        assert sorted(labelled["request_id"]) == ["job-0", "job-5", "rest-0"]
        counts = reader.class_counts("iris-classifier").set_index("label")["count"]
        assert counts.to_dict() == {"setosa": 4, "versi,color": 4, 'vir"ginica': 8}
    finally:
        reader.dispose()


def test_retention_drops_chunk_partitions_with_their_feedback(url: str) -> None:
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    old, older = today - timedelta(days=3), today - timedelta(days=30)
    db = PredictionDatabase(url, lambda n: None)
    try:
        db.ensure_schema()
        with db.engine.begin() as conn:
            ensure_day_partitions(conn, [old.date()], CHUNKS)
        for prefix, at in (("old-", old), ("older-", older), ("new-", today)):
            assert db.insert_columns(_chunk(prefix, 0, at)) == 4
        for request_id in ("old-2", "older-1", "new-2"):
            db.set_feedback(request_id, "setosa")
        where = "SELECT tableoid::regclass::text FROM prediction_chunks WHERE id_prefix = :p"
        assert _scalar(url, where, p="older-") == default_partition(CHUNKS)

        pruned = db.prune(today - timedelta(days=1))
        assert pruned.partitions == {partition_name(old.date(), CHUNKS): 4}
        assert pruned.rows_deleted == 4  # the chunk 30 days old, from the default partition
        assert pruned.feedback_deleted == 2
        assert db.get("old-2") is None and db.get("older-1") is None
        assert db.get("new-2") is not None
        assert _scalar(url, "SELECT request_id FROM feedback") == "new-2"
        assert (
            _scalar(url, "SELECT to_regclass(:n)::text", n=partition_name(old.date(), CHUNKS))
            is None
        )
    finally:
        db.dispose()


def test_ids_that_are_not_numbered_stay_rows() -> None:
    assert numbered([f"job-{i}" for i in range(7, 10)], "job-") == ("job-", 7)
    assert numbered(["job-1", "job-3"], "job-") is None
    assert numbered(["job-01", "job-2"], "job-") is None
    assert numbered(["a-1", "b-2"], "a-") is None
    assert numbered([], "job-") is None
    assert chunk_key("6f1c-aa-42") == ("6f1c-aa-", 42)
    assert chunk_key("no-number-x") is None and chunk_key("plain") is None
    assert chunk_key("job-007") is None and chunk_key("job-²") is None
    assert chunk_key("job-" + "9" * 19) is None and chunk_key("job-0") == ("job-", 0)
    assert numbered(["job-²", "job-³"], "job-") is None


def test_chunk_rows_are_the_default_and_the_setting_turns_them_off(
    url: str, tmp_path: Path
) -> None:
    for chunks, prefix in ((False, "rows-"), (None, "chunk-")):
        given = {} if chunks is None else {"prediction_chunks": chunks}
        settings = Settings(data_dir=tmp_path, database_url=url, _env_file=None, **given)
        store = PredictionStore.from_settings(settings)
        try:
            assert store.write_columns(_chunk(prefix)) == 4
        finally:
            store.stop(timeout=2)
    assert _scalar(url, "SELECT count(*) FROM predictions") == 4
    assert _scalar(url, "SELECT string_agg(id_prefix, ',') FROM prediction_chunks") == "chunk-"
    assert _scalar(url, "SELECT count(*) FROM prediction_rows") == 8


def test_a_downgrade_moves_chunk_rows_into_predictions(store: PredictionStore, url: str) -> None:
    chunk = _chunk("job-", 3)
    assert store.write_columns(chunk) == 4
    ids = list(chunk.request_ids)
    before = _stored(url, ids)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            command.downgrade(migrate._config(conn), "0002")
            assert migrate.current(conn) == "0002"
    finally:
        engine.dispose()
    assert _stored(url, ids, table="predictions") == before
    assert _scalar(url, "SELECT to_regclass('prediction_chunks')::text") is None


def test_a_spooled_batch_is_one_line_replayed_into_one_chunk_once(url: str, tmp_path: Path) -> None:
    batch = _chunk("req-", 0, recheck=False)
    line = batch.to_json_line()
    back = PredictionColumns.from_row(json.loads(line))
    assert back.request_ids == list(batch.request_ids) and back.numbered == ("req-", 0)
    assert np.array_equal(back.features, batch.features, equal_nan=True)
    assert back.predictions.tolist() == batch.predictions.tolist()
    assert back.created_at == batch.created_at and back.recheck is False

    # Stored, and also left in the spool, as after a commit whose answer never came.
    first = PredictionStore(url, tmp_path / "first")
    first.submit_columns(batch)
    assert first.flush(5)
    first.stop(timeout=2)
    spool = Spool(tmp_path / "spool", 10**7)
    assert spool.append([line, line]) == 2
    spool.close()
    store = PredictionStore(url, tmp_path / "spool")
    store.start()
    try:
        assert store.flush(5)
    finally:
        store.stop(timeout=2)
    assert not list((tmp_path / "spool").rglob("*.jsonl"))
    assert _scalar(url, "SELECT count(*) FROM prediction_chunks") == 1
    assert _scalar(url, "SELECT count(DISTINCT request_id) FROM prediction_rows") == 4
    assert _scalar(url, "SELECT count(*) FROM prediction_rows") == 4


def test_a_rest_batch_is_logged_as_one_chunk_with_the_values_of_single_rows(
    url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=url,
        data_dir=tmp_path / "data",
        admin_token=None,
        webhook_secret=None,
        prediction_flush_interval=0.02,
        _env_file=None,
    )
    holder = ModelHolder(
        ModelTarget("iris-classifier", stage="Production"), FixedVersion(), load_iris
    )
    holder.reconcile()
    store = PredictionStore.from_settings(settings)
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    names = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    with TestClient(create_app(settings, holder, store)) as client:
        batch = client.post("/predict", json={"instances": rows}, headers={"X-Request-Id": "many"})
        invocation = client.post(
            "/invocations",
            json={"dataframe_split": {"columns": names, "data": rows}},
            headers={"X-Request-Id": "inv"},
        )
        singles = [
            client.post("/predict", json={"features": r}, headers={"X-Request-Id": f"one{i}"})
            for i, r in enumerate(rows)
        ]
        assert all(r.status_code == 200 for r in (batch, invocation, *singles))
        assert store.flush(5)
    assert (
        _scalar(url, "SELECT string_agg(id_prefix, ',' ORDER BY id_prefix) FROM prediction_chunks")
        == "inv-,many-"
    )
    assert _scalar(url, "SELECT count(*) FROM predictions") == 3

    def values(ids: list[str]) -> list[tuple[object, ...]]:
        return [row[:7] for row in _stored(url, ids)]  # up to the label

    assert values([f"many-{i}" for i in range(3)]) == values([f"one{i}" for i in range(3)])
    assert values([f"inv-{i}" for i in range(3)]) == values([f"one{i}" for i in range(3)])
    # The probabilities stored are the ones answered (a batch's may differ from a single
    # row's in the last digits: the model computes them together).
    answered = [p["probabilities"] for p in batch.json()["predictions"]]
    stored = [json.loads(str(row[7])) for row in _stored(url, [f"many-{i}" for i in range(3)])]
    assert stored == answered


def test_the_writer_queue_is_bounded_in_predictions_not_items() -> None:
    batch = _chunk("q-", 0)  # 4 predictions
    record = batch.records()[0]
    q = RowQueue(maxsize=6)
    q.put_nowait(batch)
    q.put_nowait(record)
    assert q.qsize() == 5 and not q.full()
    q.put_nowait(batch)  # the last place: a batch may go past by its size
    assert q.qsize() == 9 and q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(record)
    assert q.get_nowait() is batch and q.qsize() == 5
    assert rows_in([batch, record]) == 5


def test_a_writer_batch_of_chunks_is_one_statement_that_stores_each_once(url: str) -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    a, b = _chunk("a-", 0, at, recheck=False), _chunk("b-", 0, at + timedelta(days=3))
    db = PredictionDatabase(url, lambda n: None)
    try:
        db.ensure_schema()
        # The same chunk twice in one batch (a replay beside its original) is stored once.
        assert db.insert_chunks([a, b, a]) == 8
        assert db.insert_chunks([_chunk("a-", 2, at, recheck=False), b]) == 0
        plain = dataclasses.replace(_chunk("c-", 0, at), numbered=None)
        assert db.insert_chunks([plain, _chunk("a-", 4, at, recheck=False)]) == 8
    finally:
        db.dispose()
    assert _scalar(url, "SELECT count(*) FROM prediction_chunks") == 3
    assert _scalar(url, "SELECT count(*) FROM predictions") == 4  # the unnumbered batch
    assert _scalar(url, "SELECT count(DISTINCT request_id) FROM prediction_rows") == 16

"""The prediction store's read side (PredictionReader) on SQLite and on PostgreSQL.

Rows go in through the real PredictionStore.write and add_feedback; every expectation below is
worked out by hand from the table in `_records` (exact ids, counts and percentiles).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from lifecycle.core.store import (
    PredictionReader,
    PredictionRecord,
    PredictionStore,
    StoreUnavailable,
    histogram,
)
from lifecycle.core.store.frames import WINDOW_COLUMNS
from tests.support.store_records import LABELS, make_record

MODEL = "iris-classifier"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # a multiple of 30 min since the epoch
IDS = [f"r{i:02d}" for i in range(30)]
READ_INDEXES = {"ix_predictions_model_time", "ix_predictions_model_version_time"}


def _at(i: int) -> datetime:
    # Rows come in pairs sharing a timestamp (ties for the keyset), odd pairs a quarter second
    # past the minute (fractional seconds through both dialects).
    k = i // 2
    return T0 + timedelta(minutes=10 * k, milliseconds=250 * (k % 2))


def _records() -> list[PredictionRecord]:
    """r00..r16 version 1, r17..r29 version 2; labels uneven: setosa on multiples of 5, else
    virginica (odd) or versicolor (even); latency i + 1 ms; source rest/async/batch by i % 3."""
    records = []
    for i in range(30):
        label = LABELS[0] if i % 5 == 0 else LABELS[1 + i % 2]
        base = make_record(
            i,
            source=("rest", "async", "batch")[i % 3],
            version="1" if i < 17 else "2",
            label=label,
            request_id=IDS[i],
        )
        features: dict[str, Any] = {"sepal_length": 5.0 + i / 10, "petals": i}
        features["colour"] = "red" if i % 2 else "blue"
        if i == 29:
            del features["petals"]
        records.append(
            dataclasses.replace(base, created_at=_at(i), latency_ms=float(i + 1), features=features)
        )
    others = [
        dataclasses.replace(
            make_record(i, model_name="other-model", request_id=f"o{i}"), created_at=_at(i)
        )
        for i in range(5)
    ]
    return records + others


# Feedback: request id -> (final feedback label, whether it matches the predicted label).
FEEDBACK = {
    "r00": ("setosa", True),
    "r01": ("virginica", True),
    "r02": ("setosa", False),  # predicted versicolor
    "r03": ("virginica", True),
    "r04": ("virginica", False),  # predicted versicolor
    "r18": ("versicolor", True),
    "r19": ("setosa", False),  # predicted virginica
}


@pytest.fixture
def reader(any_url: str, tmp_path: Path) -> Iterator[PredictionReader]:
    store = PredictionStore(any_url, tmp_path / "spool")
    try:
        assert store.write(_records()) == 35
        store.add_feedback("r02", "versicolor")  # replaced below: the last feedback wins
        for request_id, (label, _) in FEEDBACK.items():
            store.add_feedback(request_id, label)
        store.add_feedback("o1", "setosa")
    finally:
        store.stop(timeout=2)
    reader = PredictionReader(any_url)
    yield reader
    reader.dispose()


def test_window_last_n_is_the_newest_rows_oldest_first(reader: PredictionReader) -> None:
    frame = reader.window(MODEL, last=5)

    # r24 and r25 share a timestamp: the request id breaks the tie.
    assert frame["request_id"].tolist() == ["r25", "r26", "r27", "r28", "r29"]
    assert reader.window(MODEL, last=0).empty
    assert len(reader.window(MODEL)) == 30
    assert reader.window("other-model")["request_id"].tolist() == ["o0", "o1", "o2", "o3", "o4"]


def test_window_columns_and_values(reader: PredictionReader) -> None:
    frame = reader.window(MODEL, last=30)

    assert frame.columns.tolist() == [*WINDOW_COLUMNS, "colour", "petals", "sepal_length"]
    assert frame["request_id"].tolist() == IDS
    assert str(frame["created_at"].dtype) == "datetime64[ns, UTC]"
    assert frame["created_at"].tolist() == [pd.Timestamp(_at(i)) for i in range(30)]
    assert frame.loc[2, "created_at"] == pd.Timestamp("2024-05-01 12:10:00.250000+00:00")
    assert frame["model_version"].tolist() == ["1"] * 17 + ["2"] * 13
    assert frame["source"].tolist()[:4] == ["rest", "async", "batch", "rest"]
    assert frame["run_id"].unique().tolist() == ["0123456789abcdef"]
    assert frame["label"].tolist()[:6] == [
        "setosa",
        "virginica",
        "versicolor",
        "virginica",
        "versicolor",
        "setosa",
    ]
    assert frame["prediction"].tolist()[:6] == [0, 2, 1, 2, 1, 0]
    assert frame["latency_ms"].tolist() == [float(i + 1) for i in range(30)]
    feedback = dict(zip(frame["request_id"], frame["feedback"], strict=True))
    assert {k: v for k, v in feedback.items() if v is not None} == {
        k: label for k, (label, _) in FEEDBACK.items()
    }
    # Features: numbers (ints too) as float64, a missing value as NaN, strings as objects.
    assert frame["sepal_length"].dtype == "float64"
    assert frame["petals"].dtype == "float64"
    assert frame["petals"].tolist()[:29] == [float(i) for i in range(29)]
    assert pd.isna(frame.loc[29, "petals"])
    assert frame["sepal_length"].tolist()[10] == pytest.approx(6.0)
    assert frame["colour"].tolist()[:3] == ["blue", "red", "blue"]


def test_window_time_range_version_and_source(reader: PredictionReader) -> None:
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=40)

    assert reader.window(MODEL, since=since, until=until)["request_id"].tolist() == IDS[2:8]
    # The same instants given in another time zone select the same rows.
    plus2 = timezone(timedelta(hours=2))
    local = reader.window(MODEL, since=since.astimezone(plus2), until=until.astimezone(plus2))
    assert local["request_id"].tolist() == IDS[2:8]
    assert reader.window(MODEL, version="2")["request_id"].tolist() == IDS[17:]
    assert reader.window(MODEL, version="2", last=2)["request_id"].tolist() == ["r28", "r29"]
    assert reader.window(MODEL, source="batch")["request_id"].tolist() == IDS[2::3]
    assert reader.window(MODEL, since=T0 + timedelta(minutes=140), last=10)[
        "request_id"
    ].tolist() == ["r28", "r29"]


def test_window_arrow_matches_window(reader: PredictionReader) -> None:
    table = reader.window_arrow(MODEL, version="1")

    assert isinstance(table, pa.Table)
    assert table.column_names == [*WINDOW_COLUMNS, "colour", "petals", "sepal_length"]
    assert table.column("request_id").to_pylist() == IDS[:17]
    assert table.schema.field("created_at").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("petals").type == pa.float64()


def test_labelled_joins_the_feedback(reader: PredictionReader) -> None:
    frame = reader.labelled(MODEL)

    assert frame.columns.tolist() == [
        "request_id",
        "created_at",
        "model_version",
        "label",
        "actual",
        "colour",
        "petals",
        "sepal_length",
    ]
    assert frame["request_id"].tolist() == ["r00", "r01", "r02", "r03", "r04", "r18", "r19"]
    assert frame["actual"].tolist() == [label for label, _ in FEEDBACK.values()]
    assert frame["label"].tolist() == [
        "setosa",
        "virginica",
        "versicolor",
        "virginica",
        "versicolor",
        "versicolor",
        "virginica",
    ]
    assert frame["petals"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 18.0, 19.0]
    assert reader.labelled(MODEL, version="2")["request_id"].tolist() == ["r18", "r19"]
    assert reader.labelled(MODEL, last=3)["request_id"].tolist() == ["r04", "r18", "r19"]
    assert reader.labelled(MODEL, since=T0 + timedelta(minutes=10))["request_id"].tolist() == [
        "r02",
        "r03",
        "r04",
        "r18",
        "r19",
    ]
    assert reader.labelled("other-model")["actual"].tolist() == ["setosa"]


def test_volume_counts_per_bucket_and_version_in_the_database(reader: PredictionReader) -> None:
    # r02..r17: [12:10, 13:30), 30-minute buckets; the odd pairs sit 0.25 s past the minute.
    frame = reader.volume(MODEL, 1800, T0 + timedelta(minutes=10), T0 + timedelta(minutes=90))

    assert frame.columns.tolist() == ["bucket", "model_version", "count"]
    assert str(frame["bucket"].dtype) == "datetime64[ns, UTC]"
    assert list(frame.itertuples(index=False, name=None)) == [
        (pd.Timestamp(T0), "1", 4),
        (pd.Timestamp(T0 + timedelta(minutes=30)), "1", 6),
        (pd.Timestamp(T0 + timedelta(minutes=60)), "1", 5),
        (pd.Timestamp(T0 + timedelta(minutes=60)), "2", 1),
    ]
    hourly = reader.volume(MODEL, 3600, T0, T0 + timedelta(days=1))
    assert hourly["count"].tolist() == [12, 5, 7, 6]
    assert hourly["model_version"].tolist() == ["1", "1", "2", "2"]


def test_class_counts(reader: PredictionReader) -> None:
    frame = reader.class_counts(MODEL)

    assert list(frame.itertuples(index=False, name=None)) == [
        ("1", "setosa", 4),
        ("1", "versicolor", 7),
        ("1", "virginica", 6),
        ("2", "setosa", 2),
        ("2", "versicolor", 5),
        ("2", "virginica", 6),
    ]
    since = reader.class_counts(MODEL, since=T0 + timedelta(minutes=130))  # r26..r29
    assert list(since.itertuples(index=False, name=None)) == [
        ("2", "versicolor", 2),
        ("2", "virginica", 2),
    ]


def test_quality_matches_feedback_stats(reader: PredictionReader, any_url: str) -> None:
    frame = reader.quality(MODEL)

    # Precision per label, correct / predicted. Version 1: setosa 1/1, virginica 2/2,
    # versicolor 0/2. Version 2: versicolor 1/1, virginica 0/1, setosa (only as feedback) 0.
    assert frame.columns.tolist() == ["model_version", "n", "correct", "accuracy", "precision"]
    assert list(frame.itertuples(index=False, name=None)) == [
        ("1", 5, 3, 0.6, pytest.approx(2 / 3)),
        ("2", 2, 1, 0.5, pytest.approx(1 / 3)),
    ]
    since = reader.quality(MODEL, since=T0 + timedelta(minutes=20))  # r04, r18, r19
    assert list(since.itertuples(index=False, name=None)) == [
        ("1", 1, 0, 0.0, 0.0),
        ("2", 2, 1, 0.5, pytest.approx(1 / 3)),
    ]
    store = PredictionStore(any_url, Path("/nonexistent-spool"))
    try:
        stats = store.feedback_stats(MODEL)
    finally:
        store._db.dispose()
    assert {v: s["accuracy"] for v, s in stats.items()} == {"1": 0.6, "2": 0.5}
    precision = dict(zip(frame["model_version"], frame["precision"], strict=True))
    assert {v: s["precision_macro"] for v, s in stats.items()} == pytest.approx(precision)


def test_latency_percentiles(reader: PredictionReader) -> None:
    frame = reader.latency_percentiles(MODEL)

    assert frame.columns.tolist() == ["model_version", "n", "p50", "p90", "p95", "p99"]
    # Version 1: 1..17 ms, version 2: 18..30 ms; linear interpolation between ranks.
    assert frame["model_version"].tolist() == ["1", "2"]
    assert frame["n"].tolist() == [17, 13]
    assert frame.iloc[0, 2:].tolist() == pytest.approx([9.0, 15.4, 16.2, 16.84])
    assert frame.iloc[1, 2:].tolist() == pytest.approx([24.0, 28.8, 29.4, 29.88])
    later = reader.latency_percentiles(MODEL, since=T0 + timedelta(minutes=90), percentiles=[0.5])
    assert list(later.itertuples(index=False, name=None)) == [("2", 12, 24.5)]


def test_keyset_pages_return_every_row_once_newest_first(reader: PredictionReader) -> None:
    seen: list[str] = []
    before = None
    pages = 0
    while page := reader.page(MODEL, limit=4, before=before):
        pages += 1
        seen += [row["request_id"] for row in page]
        before = (page[-1]["created_at"], page[-1]["request_id"])

    assert pages == 8
    assert seen == IDS[::-1]


def test_page_records_and_filters(reader: PredictionReader) -> None:
    first = reader.page(MODEL, limit=2)

    assert [row["request_id"] for row in first] == ["r29", "r28"]
    assert first[0]["created_at"] == _at(29)
    assert first[0]["created_at"].tzinfo is not None
    assert first[0]["features"] == {"sepal_length": 7.9, "colour": "red"}
    assert first[0]["prediction"] == 2
    assert first[0]["probabilities"]["virginica"] == 0.8
    assert first[0]["feedback"] is None
    labelled = reader.page(MODEL, version="1", label="versicolor", source="batch")
    assert [row["request_id"] for row in labelled] == ["r14", "r08", "r02"]
    assert labelled[-1]["feedback"] == "setosa"
    window = reader.page(MODEL, since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=30))
    assert [row["request_id"] for row in window] == ["r05", "r04", "r03", "r02"]
    # A cursor in the middle of a tie: r24 shares r25's timestamp and comes next.
    after = reader.page(MODEL, limit=2, before=(_at(25), "r25"))
    assert [row["request_id"] for row in after] == ["r24", "r23"]


def test_pages_of_one_version_follow_the_cursor(reader: PredictionReader) -> None:
    # r16 (version 1) and r17 (version 2) share a timestamp: the tie must not leak r16 in.
    seen: list[str] = []
    before = None
    while page := reader.page(MODEL, version="2", limit=4, before=before):
        seen += [row["request_id"] for row in page]
        before = (page[-1]["created_at"], page[-1]["request_id"])
    assert seen == IDS[17:][::-1]
    batch = reader.page(MODEL, version="1", source="batch", limit=3, before=(_at(11), "r11"))
    assert [row["request_id"] for row in batch] == ["r08", "r05", "r02"]


def test_summary_is_volume_classes_and_latency_of_the_range(reader: PredictionReader) -> None:
    """One scan on PostgreSQL, the three queries on SQLite: the same frames, percentiles
    within the histogram's bound of the exact ones."""
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=130)  # r02..r25
    summary = reader.summary(MODEL, 1800, since, until)

    pd.testing.assert_frame_equal(summary.volume, reader.volume(MODEL, 1800, since, until))
    pd.testing.assert_frame_equal(summary.classes, reader.class_counts(MODEL, since, until))
    exact = reader.latency_percentiles(MODEL, since, until=until)
    assert summary.latency.columns.tolist() == exact.columns.tolist()
    assert summary.latency["model_version"].tolist() == ["1", "2"]
    assert summary.latency["n"].tolist() == [15, 9]
    assert summary.latency.iloc[:, 2:].to_numpy().ravel() == pytest.approx(
        exact.iloc[:, 2:].to_numpy().ravel(), rel=histogram.ALPHA
    )
    nobody = reader.summary("nobody", 60, since, until)
    assert nobody.volume.empty and nobody.classes.empty and nobody.latency.empty
    assert nobody.latency.columns.tolist() == exact.columns.tolist()


def test_unknown_model_gives_empty_frames_with_the_columns(reader: PredictionReader) -> None:
    window = reader.window("nobody", last=10)
    assert window.empty
    assert window.columns.tolist() == list(WINDOW_COLUMNS)
    assert str(window["created_at"].dtype) == "datetime64[ns, UTC]"
    assert window["latency_ms"].dtype == "float64"
    assert reader.labelled("nobody").columns.tolist() == [
        "request_id",
        "created_at",
        "model_version",
        "label",
        "actual",
    ]
    assert reader.window_arrow("nobody").num_rows == 0
    for frame in (
        reader.volume("nobody", 60, T0, T0 + timedelta(days=1)),
        reader.class_counts("nobody"),
        reader.quality("nobody"),
        reader.latency_percentiles("nobody"),
    ):
        assert frame.empty
        assert len(frame.columns) >= 3
    assert reader.page("nobody") == []


def test_read_indexes_reach_a_database_created_before_them(any_url: str, tmp_path: Path) -> None:
    store = PredictionStore(any_url, tmp_path / "spool")
    store.write([make_record(1, request_id="kept")])
    store.stop(timeout=2)
    engine = sa.create_engine(any_url)
    with engine.begin() as conn:  # the schema as it was before the read side existed
        for name in READ_INDEXES:
            conn.execute(sa.text(f"DROP INDEX {name}"))
    assert READ_INDEXES.isdisjoint(
        ix["name"] for ix in sa.inspect(engine).get_indexes("predictions")
    )

    for _ in range(2):  # a first start adds them, a second finds them and does nothing
        store = PredictionStore(any_url, tmp_path / "spool")
        store.start()
        store.stop(timeout=2)

    indexes = {
        ix["name"]: ix["column_names"] for ix in sa.inspect(engine).get_indexes("predictions")
    }
    engine.dispose()
    assert indexes["ix_predictions_model_time"] == ["model_name", "created_at", "request_id"]
    assert indexes["ix_predictions_model_version_time"] == [
        "model_name",
        "model_version",
        "created_at",
    ]
    assert PredictionReader(any_url).window("iris-classifier")["request_id"].tolist() == ["kept"]


def test_a_feature_named_like_a_column_is_prefixed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    store = PredictionStore(url, tmp_path / "spool")
    store.write([dataclasses.replace(make_record(0), features={"label": 3, "width": 1.5})])
    store.stop(timeout=2)

    frame = PredictionReader(url).window("iris-classifier")

    assert frame.columns.tolist() == [*WINDOW_COLUMNS, "features.label", "width"]
    assert frame[["label", "features.label"]].values.tolist() == [["setosa", 3.0]]


def test_a_database_without_tables_reads_as_empty(tmp_path: Path) -> None:
    reader = PredictionReader(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert reader.window(MODEL).empty
    assert reader.page(MODEL) == []


def test_an_unreachable_database_is_store_unavailable(tmp_path: Path) -> None:
    reader = PredictionReader(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'p.db'}")
    with pytest.raises(StoreUnavailable, match="prediction database unavailable"):
        reader.window(MODEL)
    with pytest.raises(StoreUnavailable):
        reader.quality(MODEL)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    reader = PredictionReader(f"sqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(ValueError, match="bucket_seconds"):
        reader.volume(MODEL, 0, T0, T0)
    with pytest.raises(ValueError, match="limit"):
        reader.page(MODEL, limit=0)
    with pytest.raises(ValueError, match="last"):
        reader.window(MODEL, last=-1)
    with pytest.raises(ValueError, match="percentiles"):
        reader.latency_percentiles(MODEL, percentiles=[1.5])


def test_count_matches_the_window(reader: PredictionReader) -> None:
    assert reader.count(MODEL) == 30
    assert reader.count(MODEL, last=5) == 5
    assert reader.count(MODEL, last=500) == 30
    assert reader.count(MODEL, version="2") == 13
    assert reader.count(MODEL, since=_at(20)) == len(reader.window(MODEL, since=_at(20)))
    assert reader.count("no-such-model") == 0


def test_sample_reads_part_of_a_large_window_and_all_of_a_small_one(
    any_url: str, tmp_path: Path
) -> None:
    store = PredictionStore(any_url, tmp_path / "spool")
    try:
        records = [
            dataclasses.replace(make_record(i, request_id=f"s{i:04d}"), created_at=_at(i))
            for i in range(2000)
        ]
        assert store.write(records) == 2000
    finally:
        store.stop(timeout=2)
    reader = PredictionReader(any_url)
    try:
        # A window within the sample size is read whole, in order.
        assert reader.window(MODEL, last=300, sample=300)["request_id"].tolist() == [
            f"s{i:04d}" for i in range(1700, 2000)
        ]
        # Larger: about `sample` rows, all from inside the window, spread over all of it.
        sampled = reader.window(MODEL, sample=400)
        assert 300 < len(sampled) < 500
        numbers = sorted(int(r[1:]) for r in sampled["request_id"])
        assert numbers[0] < 100 and numbers[-1] > 1900
        last = reader.window(MODEL, last=1000, sample=200)
        assert 130 < len(last) < 270
        assert all(int(r[1:]) >= 1000 for r in last["request_id"])
        assert last["created_at"].is_monotonic_increasing
    finally:
        reader.dispose()

"""Predictions written as columns (`PredictionStore.write_columns`) store exactly what the row
path stores, on PostgreSQL (COPY text built from the columns) and on SQLite (the INSERT path),
exactly once."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from lifecycle.core.store import PredictionStore
from lifecycle.core.store.columns import PredictionColumns
from lifecycle.core.store.copy_text import NotColumnar, copy_text, float_texts, json_objects
from tests.support.services import temp_database
from tests.support.store_records import CountingObserver

FEATURES = ("sepal length (cm)", 'odd "name"\n', "naïve", "w")
CLASSES = ("setosa", "versi,color", 'vir"ginica')


def _columns(prefix: str, *, probabilities: bool = True) -> PredictionColumns:
    """Values a formatter can get wrong: integral floats (5.0), tiny and huge magnitudes
    (repr switches to exponents), negative zero, NaN (JSON null), float32 probabilities."""
    features = np.array(
        [
            [5.0, 3.5, 1e-05, -0.0],
            [math.nan, 123456789.5, 1e16, 2.5e-7],
            [0.1 + 0.2, 1e9, 0.0001, -7.25],
            [1.7976931348623157e308, 5e-324, 100.0, 1 / 3],
        ]
    )
    probs = np.array(
        [[0.8, 0.1, 0.1], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [1e-20, 0.5, 0.5]],
        dtype=np.float32,
    ).astype(np.float64)
    return PredictionColumns(
        request_ids=[f"{prefix}-{i}" for i in range(4)],
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        source="batch",
        model_name="iris-classifier",
        model_version="7",
        run_id=None,
        feature_names=FEATURES,
        features=features,
        predictions=np.array([0, 2, 1, 2]),
        labels=["setosa", 'vir"ginica', "versi,color", 'vir"ginica'],
        class_labels=CLASSES if probabilities else None,
        probabilities=probs if probabilities else None,
        latency_ms=0.1234,
    )


def _with_ids(batch: PredictionColumns, prefix: str) -> PredictionColumns:
    return dataclasses.replace(batch, request_ids=[f"{prefix}-{i}" for i in range(len(batch))])


def _stored(url: str, ids: list[str], table: str = "predictions") -> list[tuple]:
    engine = sa.create_engine(url)
    json_text = "{}::text" if engine.dialect.name == "postgresql" else "{}"
    columns = ", ".join(
        json_text.format(c) if c in ("features", "prediction", "probabilities") else c
        for c in (
            "source",
            "model_name",
            "model_version",
            "run_id",
            "features",
            "prediction",
            "label",
            "probabilities",
            "latency_ms",
            "created_at",
        )
    )
    try:
        with engine.connect() as conn:
            sql = sa.text(f"SELECT {columns} FROM {table} WHERE request_id = :id")
            return [tuple(conn.execute(sql, {"id": i}).one()) for i in ids]
    finally:
        engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with temp_database("lc_columns") as database:
        yield database


@pytest.fixture
def store(url: str, tmp_path: Path) -> Iterator[PredictionStore]:
    store = PredictionStore(url, tmp_path / "spool", observer=CountingObserver())
    yield store
    store.stop(timeout=2)


@pytest.mark.parametrize("probabilities", [True, False])
def test_columns_store_what_the_row_path_stores(
    store: PredictionStore, url: str, probabilities: bool, caplog: pytest.LogCaptureFixture
) -> None:
    columns = _columns("col", probabilities=probabilities)
    records = _with_ids(columns, "row").records()

    with caplog.at_level(logging.INFO, logger="lifecycle.core.store"):
        assert store.write_columns(columns) == 4
    # Stored from the columns themselves, not by falling back to the rows.
    assert not [r for r in caplog.records if "rows" in r.getMessage()]
    assert store.write(records) == 4  # the row path: COPY from rows, or the INSERT

    assert _stored(url, list(columns.request_ids)) == _stored(url, [r.request_id for r in records])
    back = store.get("col-1")
    assert back is not None and back.features[FEATURES[0]] is None  # NaN: JSON null
    assert back.features[FEATURES[1]] == 123456789.5 and back.label == 'vir"ginica'
    assert back.prediction == 2 and back.run_id is None


def test_a_batch_written_again_stores_nothing_new(store: PredictionStore) -> None:
    columns = _columns("again")
    assert store.write_columns(columns) == 4
    assert store.write_columns(columns) == 0
    assert store.write_columns(_with_ids(columns, "again-more")) == 4
    assert store.count() == 8


def test_arrow_request_ids_and_a_shape_mismatch(store: PredictionStore) -> None:
    columns = dataclasses.replace(
        _columns("x"), request_ids=pa.array([f"arrow-{i}" for i in range(4)])
    )
    assert store.write_columns(columns) == 4
    assert store.get("arrow-3") is not None
    with pytest.raises(ValueError, match="labels"):
        dataclasses.replace(columns, labels=["setosa"])


def test_floats_are_formatted_as_json_dumps_formats_them() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            rng.normal(5, 2, 20_000).round(2),
            rng.random(20_000),
            rng.random(20_000) * 10.0 ** rng.integers(-30, 30, 20_000),
            -rng.random(5_000) * 10.0 ** rng.integers(-8, 20, 5_000),
            rng.integers(-(10**6), 10**6, 5_000).astype(float),
            [0.0, -0.0, 1e-4, 9.999e-5, 1e9, 999999999.9, 1e16, math.nan, math.inf, -math.inf],
        ]
    )
    expected = [json.dumps(v if math.isfinite(v) else None) for v in values.tolist()]
    assert float_texts(values).to_pylist() == expected
    objects = json_objects(("a", 'b"'), values[:100].reshape(50, 2)).to_pylist()
    assert objects == [
        json.dumps({"a": a, 'b"': b}) for a, b in values[:100].reshape(50, 2).tolist()
    ]


def test_a_layout_the_columns_do_not_cover_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(NotColumnar, match="shoe_size"):
        copy_text(_columns("n"), ["request_id", "shoe_size"])
    categorical = dataclasses.replace(
        _columns("c"), features=np.array([["a"] * 4] * 4, dtype=object)
    )
    with pytest.raises(NotColumnar):
        copy_text(categorical, ["request_id", "features"])

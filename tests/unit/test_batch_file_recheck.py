"""A batch file job stamped with its accepted time: every delivery of it stores the same
created_at, so the prediction log's key alone keeps its rows once on PostgreSQL (no request-id
lookup); a job without one (an earlier API, a client's own id) is looked up as before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from celery.app.task import Context

from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionStore
from serving.batch_files import ACCEPTED_AT, accepted_at, accepted_header, score_file
from serving.metrics import Metrics
from serving.runtime import ModelHolder, ModelTarget, Reconciler
from serving.wiring import Runtime
from tests.support.fixed_model import FixedVersion, load_iris
from tests.support.services import temp_database

ROWS = 50


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with temp_database("lc_batch_recheck") as url:
        settings = Settings(
            database_url=url, data_dir=tmp_path / "data", batch_chunk_rows=7, max_batch_rows=100
        )
        target = ModelTarget("iris-classifier", stage="Production")
        holder = ModelHolder(target, FixedVersion(), load_iris)
        holder.reconcile()
        store = PredictionStore.from_settings(settings)
        yield Runtime(settings, holder, Reconciler(holder, 60), store, Metrics())
        store.stop()


def _source(runtime: Runtime, tmp_path: Path) -> Path:
    names = list(runtime.holder.get().schema.names)
    values = np.random.default_rng(0).normal([5.8, 3.0, 3.7, 1.2], 0.5, size=(ROWS, 4))
    source = tmp_path / "in.csv"
    pd.DataFrame(values.round(2), columns=names).to_csv(source, index=False)
    return source


def _stored(runtime: Runtime, prefix: str) -> list[tuple[str, datetime]]:
    engine = sa.create_engine(runtime.settings.resolved_database_url())
    try:
        with engine.connect() as conn:
            sql = "SELECT request_id, created_at FROM prediction_rows WHERE request_id LIKE :p"
            return [tuple(r) for r in conn.execute(sa.text(sql), {"p": f"{prefix}-%"})]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_redelivered_job_stamped_with_its_accepted_time_stores_each_row_once(
    runtime: Runtime, tmp_path: Path
) -> None:
    source = _source(runtime, tmp_path)
    accepted = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    first = score_file(runtime, "job", str(source), accepted_at=accepted)
    again = score_file(runtime, "job", str(source), accepted_at=accepted)  # redelivered
    assert first["rows"] == again["rows"] == ROWS
    stored = _stored(runtime, "job")
    assert sorted(rid for rid, _ in stored) == sorted(f"job-{i}" for i in range(ROWS))
    assert {at for _, at in stored} == {accepted}


@pytest.mark.postgres
def test_a_job_without_an_accepted_time_is_looked_up(runtime: Runtime, tmp_path: Path) -> None:
    source = _source(runtime, tmp_path)
    score_file(runtime, "old", str(source))
    score_file(runtime, "old", str(source))  # scored again later: other created_at values
    stored = _stored(runtime, "old")
    assert len(stored) == ROWS and len({rid for rid, _ in stored}) == ROWS


def test_the_accepted_time_is_read_from_the_task_request() -> None:
    header = accepted_header()
    at = accepted_at(Context(header))
    assert at is not None and at.tzinfo is not None
    assert abs((datetime.now(UTC) - at).total_seconds()) < 5
    assert accepted_at(Context({ACCEPTED_AT: "2026-01-02T03:04:05"})) == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    for request in (Context({}), Context({ACCEPTED_AT: "yesterday"}), Context({ACCEPTED_AT: 5})):
        assert accepted_at(request) is None

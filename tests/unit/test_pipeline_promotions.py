"""The automatic promotion log (lifecycle/core/store/promotions.py) and the counter the API
exports from it (`lifecycle_automatic_promotions_total`), on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lifecycle.core.store import migrate
from lifecycle.core.store.promotions import AutomaticPromotion, PromotionLog
from lifecycle.core.store.read import PredictionReader
from lifecycle.core.store.tables import predictions
from serving.metrics import Metrics

COUNTER = "lifecycle_automatic_promotions_total"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def log(db_url: str) -> Iterator[PromotionLog]:
    promotions = PromotionLog(db_url)
    yield promotions
    promotions.dispose()


def _row(outcome: str, version: str | None = "2", model: str = "iris") -> AutomaticPromotion:
    return AutomaticPromotion(
        model_name=model,
        version=version,
        stage="Production",
        outcome=outcome,
        report_id="r1",
        dag_run_id="manual__1",
        run_id="a" * 32,
        detail="why",
    )


def _scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _counter(model: str, outcome: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (COUNTER, frozenset({("model", model), ("outcome", outcome)}))


def test_record_counts_by_model_and_outcome(log: PromotionLog) -> None:
    first = log.record(_row("promoted"))
    log.record(_row("refused", "3"))
    log.record(_row("refused", "4"))
    log.record(_row("failed", None, model="wine"))
    assert first.id is not None and first.created_at is not None
    assert log.counts() == {
        ("iris", "promoted"): 1,
        ("iris", "refused"): 2,
        ("wine", "failed"): 1,
    }


def test_an_unknown_outcome_is_refused(log: PromotionLog) -> None:
    with pytest.raises(ValueError, match="outcome must be one of"):
        log.record(_row("maybe"))


def test_served_and_first_prediction_mark_the_newest_row_of_the_version(
    log: PromotionLog,
) -> None:
    log.record(_row("refused", "2"))
    newest = log.record(_row("promoted", "2"))
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert log.mark_served("iris", "2", at)
    assert log.mark_first_prediction("iris", "2", "req-1")
    found = log.latest("iris", "2")
    assert found is not None and found.id == newest.id
    assert found.served_at == at and found.first_request_id == "req-1"
    assert not log.mark_served("iris", "9", at)


def test_first_prediction_is_the_oldest_of_that_version(db_url: str) -> None:
    reader = PredictionReader(db_url)
    assert reader.first("iris", "2") is None  # no predictions table yet
    engine = sa.create_engine(db_url)
    migrate.upgrade(engine)  # the tables and the view the reader reads
    now = datetime.now(UTC)
    rows = [
        ("b", now - timedelta(seconds=5), "2"),
        ("a", now - timedelta(seconds=9), "1"),
        ("c", now - timedelta(seconds=1), "2"),
    ]
    with engine.begin() as conn:
        for request_id, created_at, version in rows:
            conn.execute(
                predictions.insert().values(
                    request_id=request_id,
                    created_at=created_at,
                    source="rest",
                    model_name="iris",
                    model_version=version,
                    features={"x": 1.0},
                    latency_ms=1.0,
                )
            )
    engine.dispose()
    found = reader.first("iris", "2")
    assert found is not None and found[0] == "b"
    assert reader.first("iris", "3") is None
    reader.dispose()


def test_counter_shows_the_served_models_series_at_zero_before_any_row(
    log: PromotionLog,
) -> None:
    metrics = Metrics()
    metrics.watch_promotions(log, "iris")
    samples = _scrape(metrics)
    assert samples[_counter("iris", "refused")] == 0
    assert samples[_counter("iris", "promoted")] == 0
    assert samples[("lifecycle_automatic_promotions_up", frozenset())] == 1


def test_counter_counts_the_rows_at_scrape_time(db_url: str, log: PromotionLog) -> None:
    metrics = Metrics()
    metrics.watch_promotions(PromotionLog(db_url), "iris")
    log.record(_row("refused"))
    log.record(_row("promoted", model="wine"))
    samples = _scrape(metrics)
    assert samples[_counter("iris", "refused")] == 1
    assert samples[_counter("iris", "promoted")] == 0
    assert samples[_counter("wine", "promoted")] == 1


def test_an_unreadable_log_leaves_the_counter_out_and_says_so(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.watch_promotions(PromotionLog(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"), "iris")
    samples = _scrape(metrics)
    assert samples[("lifecycle_automatic_promotions_up", frozenset())] == 0
    assert not [key for key in samples if key[0] == COUNTER]

"""The Overview page's figures from Prometheus text: served model, rates, percentiles."""

from __future__ import annotations

import math

import pytest

from serving.metrics import Metrics
from ui import metrics


def _text(m: Metrics) -> str:
    return m.render().decode()


def test_snapshot_counts_scoring_requests_by_status_class_only() -> None:
    m = Metrics()
    for _ in range(8):
        m.observe_request("/predict", "POST", 200, 0.002)
    m.observe_request("/predict", "POST", 422, 0.001)
    m.observe_request("/invocations", "POST", 500, 0.3)
    for _ in range(50):  # the UI's own reads are not traffic
        m.observe_request("/model", "GET", 200, 0.001)
    snap = metrics.snapshot(metrics.parse(_text(m)), at=100.0)
    assert snap.requests == {"2xx": 8.0, "4xx": 1.0, "5xx": 1.0}
    assert snap.total == 10
    assert snap.buckets[math.inf] == 10
    assert snap.buckets[0.0025] == 9  # 8 x 2 ms + 1 x 1 ms


def test_rates_between_two_reads_and_after_a_restart() -> None:
    m = Metrics()
    m.observe_request("/predict", "POST", 200, 0.002)
    before = metrics.snapshot(metrics.parse(_text(m)), at=10.0)
    for status in (200, 200, 200, 500, 422):
        m.observe_request("/predict", "POST", status, 0.002)
    after = metrics.snapshot(metrics.parse(_text(m)), at=12.0)
    rates = metrics.rates(before, after)
    assert rates is not None
    assert rates.requests_per_second == pytest.approx(2.5)
    assert rates.error_share == pytest.approx(0.2)
    assert rates.refused_share == pytest.approx(0.2)
    # A restarted API's counters start again: no negative rate.
    restarted = metrics.snapshot(metrics.parse(_text(Metrics())), at=14.0)
    assert metrics.rates(after, restarted) is None
    assert metrics.rates(after, after) is None
    assert metrics.bucket_delta(before, after) == {
        le: after.buckets[le] - before.buckets.get(le, 0) for le in after.buckets
    }


def test_quantile_interpolates_inside_the_bucket() -> None:
    # 100 requests: 50 under 10 ms, 40 in (10, 20] ms, 10 in (20, 50] ms.
    buckets = {0.01: 50.0, 0.02: 90.0, 0.05: 100.0, math.inf: 100.0}
    assert metrics.quantile(0.5, buckets) == pytest.approx(0.01)
    assert metrics.quantile(0.7, buckets) == pytest.approx(0.015)
    assert metrics.quantile(0.95, buckets) == pytest.approx(0.035)
    assert metrics.quantile(0.25, buckets) == pytest.approx(0.005)
    assert metrics.quantile(0.5, {0.01: 0.0, math.inf: 0.0}) is None
    assert metrics.quantile(0.5, {}) is None
    # Above the largest finite bound the histogram knows nothing more.
    assert metrics.quantile(0.99, {0.01: 1.0, math.inf: 10.0}) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="quantile"):
        metrics.quantile(1.5, buckets)


def test_quantile_matches_the_real_histogram_of_the_api() -> None:
    m = Metrics()
    for ms in range(1, 101):  # 1..100 ms, uniform
        m.observe_request("/predict", "POST", 200, ms / 1000)
    snap = metrics.snapshot(metrics.parse(_text(m)), at=0.0)
    p50 = metrics.quantile(0.5, snap.buckets)
    assert p50 is not None and 0.025 <= p50 <= 0.05  # the bucket holding the 50th
    assert p50 == pytest.approx(0.05, abs=0.0001)  # 50 requests at or under 50 ms


def test_served_models_are_the_info_series_at_one() -> None:
    text = (
        "# TYPE lifecycle_model_info gauge\n"
        'lifecycle_model_info{alias="",name="iris",run_id="a",stage="Archived",version="1"} 0.0\n'
        'lifecycle_model_info{alias="",name="iris",run_id="b",stage="Production",version="2"} 1.0\n'
    )
    assert metrics.served_models(metrics.parse(text)) == [
        {"alias": "", "name": "iris", "run_id": "b", "stage": "Production", "version": "2"}
    ]

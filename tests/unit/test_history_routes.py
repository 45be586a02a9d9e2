"""The history routes in process, over a real SQLite prediction log: paging, filters, the 422s,
the aggregates, the CSV and this process's swap history. The real stack (PostgreSQL, a served
iris model, a promotion) is in tests/integration/test_history_api.py."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import precision_score

from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionReader, PredictionRecord, PredictionStore
from serving.api import routes_history
from serving.api.app import create_app
from serving.runtime import LoadedModel, ModelHolder, ModelTarget, VersionRef
from serving.runtime.history import SwapHistory
from tests.support.store_records import LABELS, make_record

MODEL = "iris-classifier"
N = 30
# Within the last 24 hours, so /predictions/stats' default range holds every row.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
# Predicted labels cycle setosa, versicolor, virginica (i % 3). Version 1: r00 and r03 right,
# r01, r02 and r04 wrong; version 2: r20 right, r22 (versicolor) said to be setosa, a label
# version 2 never predicted among these.
FEEDBACK = {
    "r00": "setosa",
    "r01": "setosa",
    "r02": "versicolor",
    "r03": "setosa",
    "r04": "setosa",
    "r20": "virginica",
    "r22": "setosa",
}


class Registry:
    """The registry's answer: whatever version `points_at` names (v3 fails to load)."""

    def __init__(self) -> None:
        self.points_at = "1"

    def resolve(self, target: ModelTarget) -> VersionRef:
        return VersionRef(target.name, self.points_at, f"run-{self.points_at}", "Production")


def _load(ref: VersionRef, target: ModelTarget) -> LoadedModel:
    if ref.version == "3":
        raise ValueError("not a pickle")
    return LoadedModel(
        name=ref.name,
        version=ref.version,
        stage=ref.stage,
        alias=None,
        run_id=ref.run_id,
        schema=None,  # type: ignore[arg-type]
        predictor=None,  # type: ignore[arg-type]
        loaded_at=datetime.now(UTC),
        flavor="sklearn",
    )


def _records() -> list[PredictionRecord]:
    """r00..r19 version 1, r20..r29 version 2, a minute apart; r10/r11 share a timestamp (a
    keyset tie); label i % 3, source rest/async/batch by i % 3 too; latency i + 1 ms."""
    records = []
    for i in range(N):
        at = T0 + timedelta(minutes=10 if i == 11 else i)
        base = make_record(
            i,
            source=("rest", "async", "batch")[i % 3],
            model_name=MODEL,
            version="1" if i < 20 else "2",
            label=LABELS[i % 3],
            request_id=f"r{i:02d}",
        )
        records.append(dataclasses.replace(base, created_at=at, latency_ms=float(i + 1)))
    other = dataclasses.replace(make_record(0, model_name="other", request_id="o0"), created_at=T0)
    return [*records, other]


NEWEST_FIRST = [f"r{i:02d}" for i in (*range(29, 11, -1), 11, 10, *range(9, -1, -1))]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Registry, ModelHolder]]:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    store = PredictionStore(url, tmp_path / "spool")
    try:
        assert store.write(_records()) == N + 1
        for request_id, label in FEEDBACK.items():
            store.add_feedback(request_id, label)
    finally:
        store.stop(timeout=2)
    registry = Registry()
    holder = ModelHolder(ModelTarget(MODEL, stage="Production"), registry, _load)
    settings = Settings(
        admin_token=None,
        webhook_secret=None,
        data_dir=tmp_path,
        database_url=url,
        tracking_uri="http://127.0.0.1:9",
    )
    reader = PredictionReader(url)
    with TestClient(create_app(settings, holder, predictions=reader)) as client:
        yield client, registry, holder


def _ids(body: dict) -> list[str]:
    return [row["request_id"] for row in body["predictions"]]


def test_pages_follow_next_newest_first_without_overlap(api) -> None:
    client, _, _ = api
    seen: list[str] = []
    params: dict[str, object] = {"limit": 7}
    pages = 0
    while True:
        body = client.get("/predictions", params=params).json()
        pages += 1
        seen += _ids(body)
        if body["next"] is None:
            break
        params = {"limit": 7, "before": body["next"]}
    assert pages == 5  # 7 + 7 + 7 + 7 + 2
    assert seen == NEWEST_FIRST  # r11 and r10 tie on created_at: the request id breaks it
    first = client.get("/predictions", params={"limit": 1}).json()["predictions"][0]
    assert first["request_id"] == "r29"
    assert first["model_version"] == "2"
    assert first["source"] == "batch"
    assert first["label"] == LABELS[29 % 3]
    assert first["latency_ms"] == 30.0
    assert first["run_id"] == "0123456789abcdef"
    assert set(first["features"]) == {"sepal_length", "sepal_width", "petal_length", "petal_width"}
    assert first["probabilities"][LABELS[29 % 3]] == 0.8
    assert first["feedback"] is None
    assert datetime.fromisoformat(first["created_at"]) == T0 + timedelta(minutes=29)
    # Exactly a page's worth left: the last page says so, with no cursor to an empty page.
    assert client.get("/predictions", params={"limit": N}).json()["next"] is None


def test_filters_select_rows(api) -> None:
    client, _, _ = api

    def ids(**params: object) -> list[str]:
        return _ids(client.get("/predictions", params={"limit": 100, **params}).json())

    assert ids(version="2") == NEWEST_FIRST[:10]
    assert ids(source="batch") == [r for r in NEWEST_FIRST if int(r[1:]) % 3 == 2]
    assert ids(label="setosa") == [r for r in NEWEST_FIRST if int(r[1:]) % 3 == 0]
    since = (T0 + timedelta(minutes=25)).isoformat()
    until = (T0 + timedelta(minutes=28)).isoformat()
    assert ids(since=since, until=until) == ["r27", "r26", "r25"]
    # A time without a zone is UTC.
    naive = (T0 + timedelta(minutes=28)).replace(tzinfo=None).isoformat()
    assert ids(since=naive) == ["r29", "r28"]
    assert ids(model="other") == ["o0"]
    assert ids(model="nobody") == []
    feedback = client.get("/predictions", params={"limit": 100}).json()["predictions"]
    assert {r["request_id"]: r["feedback"] for r in feedback if r["feedback"]} == FEEDBACK


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/predictions", {"limit": 0}, "limit"),
        ("/predictions", {"limit": 1001}, "limit"),
        ("/predictions", {"source": "kafka"}, "source"),
        ("/predictions", {"since": "yesterday"}, "since"),
        ("/predictions", {"until": "2024-13-01T00:00:00"}, "until"),
        ("/predictions", {"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ("/predictions", {"model": "a\x00b"}, "model"),
        ("/predictions", {"before": "not a cursor"}, "before"),
        ("/predictions", {"before": "bm90LWpzb24"}, "before"),
        ("/predictions.csv", {"limit": 100_001}, "limit"),
        ("/predictions.csv", {"label": "\x7f"}, "label"),
        ("/predictions/stats", {"bucket": 0}, "bucket"),
        ("/predictions/stats", {"bucket": 8}, "bucket"),  # 10,800 buckets in the 24 h
        ("/predictions/stats", {"since": "2024-01-02T00:00:00Z", "until": "2024-01-01"}, "until"),
        ("/predictions/stats", {"until": "0001-01-01T00:00:00Z"}, "until"),
    ],
)
def test_bad_values_are_422_naming_the_field(api, path: str, params: dict, field: str) -> None:
    client, _, _ = api
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{field}: "), response.json()


@pytest.mark.parametrize(
    "payload",
    [
        b'["2024-01-01T00:00:00", "r01"]',  # no time zone: not one of ours
        b'["2024-01-01T00:00:00+00:00", "r\\u0000"]',  # a NUL the driver would refuse
        b'["2024-01-01T00:00:00+00:00", "\\ud800"]',  # a lone surrogate, not UTF-8
        b'["2024-01-01T00:00:00+00:00", 7]',
        b'["2024-01-01T00:00:00+00:00"]',
        b"{}",
    ],
)
def test_a_forged_cursor_is_a_422(api, payload: bytes) -> None:
    client, _, _ = api
    cursor = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    response = client.get("/predictions", params={"before": cursor})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("before: ")


def test_stats_are_grouped_per_version_class_and_bucket(api) -> None:
    client, _, _ = api
    body = client.get("/predictions/stats").json()

    assert body["model"] == MODEL
    assert body["bucket_seconds"] == 1800  # 24 h / 60 is 1440 s: the next readable size
    until, read_at = datetime.fromisoformat(body["until"]), datetime.fromisoformat(body["read_at"])
    assert until == read_at
    assert until - datetime.fromisoformat(body["since"]) == timedelta(hours=24)
    per_version: Counter[str] = Counter()
    for bucket in body["volume"]:
        per_version[bucket["model_version"]] += bucket["count"]
    assert per_version == {"1": 20, "2": 10}
    expected = Counter(("1" if i < 20 else "2", LABELS[i % 3]) for i in range(N))
    assert {(c["model_version"], c["label"]): c["count"] for c in body["classes"]} == expected
    latency = {row["model_version"]: row for row in body["latency"]}
    assert latency["1"]["n"] == 20 and latency["2"]["n"] == 10
    assert latency["1"]["p50"] == pytest.approx(10.5)  # 1..20 ms, interpolated
    assert latency["2"]["p99"] == pytest.approx(29.91)  # 21..30 ms
    # Version 1, per label correct / predicted: setosa 2/2, versicolor 0/2, virginica 0/1.
    # Version 2: virginica 1/1, versicolor 0/1, and setosa, only ever the feedback, 0: the
    # macro average runs over every label seen (1/3, not 1/2 over the predicted ones).
    assert body["quality"] == [
        {
            "model_version": "1",
            "n": 5,
            "correct": 2,
            "accuracy": pytest.approx(0.4),
            "precision": pytest.approx(1 / 3),
        },
        {
            "model_version": "2",
            "n": 2,
            "correct": 1,
            "accuracy": pytest.approx(0.5),
            "precision": pytest.approx(1 / 3),
        },
    ]


def test_stats_quality_is_what_the_precision_gauge_computes(api, tmp_path: Path) -> None:
    """The same numbers as feedback_stats (lifecycle_feedback_accuracy/precision's source)
    and scikit-learn, from the same feedback."""
    client, _, _ = api
    quality = {
        row["model_version"]: row for row in client.get("/predictions/stats").json()["quality"]
    }
    store = PredictionStore(f"sqlite:///{tmp_path / 'app.db'}", tmp_path / "spool")
    try:
        gauges = store.feedback_stats(MODEL)
    finally:
        store.stop(timeout=2)
    assert set(gauges) == {"1", "2"}
    rows = {r.request_id: r for r in _records()}
    for version, stats in gauges.items():
        assert quality[version]["accuracy"] == pytest.approx(stats["accuracy"])
        assert quality[version]["precision"] == pytest.approx(stats["precision_macro"])
        ids = [i for i in FEEDBACK if rows[i].model_version == version]
        predicted = [rows[i].label for i in ids]
        actual = [FEEDBACK[i] for i in ids]
        expected = precision_score(actual, predicted, average="macro", zero_division=0)
        assert quality[version]["precision"] == pytest.approx(expected)


def test_stats_range_and_bucket(api) -> None:
    client, _, _ = api
    since = T0 + timedelta(minutes=20)
    # r20..r24: `until` bounds every aggregate, not only the volume.
    params = {"since": since.isoformat(), "until": (since + timedelta(minutes=5)).isoformat()}
    body = client.get("/predictions/stats", params={**params, "bucket": 120}).json()

    assert body["bucket_seconds"] == 120
    assert sum(b["count"] for b in body["volume"]) == 5
    assert len(body["volume"]) == 3  # five minutes over two-minute buckets
    assert {b["model_version"] for b in body["volume"]} == {"2"}
    assert sum(c["count"] for c in body["classes"]) == 5
    assert [(row["n"], row["p50"]) for row in body["latency"]] == [(5, 23.0)]
    assert body["quality"] == [  # r20 and r22
        {
            "model_version": "2",
            "n": 2,
            "correct": 1,
            "accuracy": 0.5,
            "precision": pytest.approx(1 / 3),
        },
    ]

    def quality(start: timedelta, end: timedelta) -> list[dict]:
        bounds = {"since": (T0 + start).isoformat(), "until": (T0 + end).isoformat()}
        return client.get("/predictions/stats", params=bounds).json()["quality"]

    one = {"model_version": "2", "n": 1}
    assert quality(timedelta(minutes=20), timedelta(minutes=22)) == [  # r20
        {**one, "correct": 1, "accuracy": 1.0, "precision": 1.0}
    ]
    assert quality(timedelta(minutes=21), timedelta(minutes=25)) == [  # r22
        {**one, "correct": 0, "accuracy": 0.0, "precision": 0.0}
    ]
    assert quality(timedelta(minutes=23), timedelta(minutes=25)) == []
    # A five-minute span gets five-second buckets.
    assert client.get("/predictions/stats", params=params).json()["bucket_seconds"] == 5
    empty = client.get("/predictions/stats", params={"model": "nobody"}).json()
    assert [empty[k] for k in ("volume", "classes", "latency", "quality")] == [[], [], [], []]


def test_nice_bucket() -> None:
    def bucket(**span: float) -> int:
        return routes_history.nice_bucket(timedelta(**span))

    assert bucket(seconds=1) == 1
    assert bucket(minutes=10) == 10
    assert bucket(hours=1) == 60
    assert bucket(hours=24) == 1800
    assert bucket(days=7) == 3 * 3600  # 10080 s, rounded up to 3 h: 56 buckets
    assert bucket(days=20) == 12 * 3600
    assert bucket(days=90) == 2 * 86400
    assert bucket(days=3_650_000) == routes_history.MAX_BUCKET


def test_csv_has_the_rows_and_one_column_per_feature(api) -> None:
    client, _, _ = api
    response = client.get("/predictions.csv", params={"version": "1", "limit": 15})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == (
        f'attachment; filename="{MODEL}-predictions.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["request_id"] for r in rows] == [r for r in NEWEST_FIRST if r < "r20"][:15]
    assert list(rows[0]) == [
        *routes_history.CSV_COLUMNS,
        "petal_length",
        "petal_width",
        "sepal_length",
        "sepal_width",
    ]
    assert float(rows[0]["sepal_length"]) == pytest.approx(5.1 + 19 % 7 / 10)
    assert rows[0]["latency_ms"] == "20.0"
    last = next(r for r in rows if r["request_id"] == "r05")
    assert last["feedback"] == "" and last["model_version"] == "1"
    whole = client.get("/predictions.csv").text
    assert len(list(csv.DictReader(io.StringIO(whole)))) == N


def test_csv_names_features_that_clash_with_a_column() -> None:
    rows = [
        {
            **{c: None for c in routes_history.CSV_COLUMNS},
            "features": {"label": "x", "a": [1, 2]},
        }
    ]
    header, line = routes_history.rows_csv(rows).splitlines()
    assert header.endswith(",a,features.label")
    assert line.endswith(',"[1, 2]",x')


def test_model_history_records_swaps_and_failures_newest_first(api) -> None:
    client, registry, holder = api
    assert client.get("/model/history").json() == {"pid": os.getpid(), "swaps": []}
    assert holder.reconcile().action == "loaded"
    registry.points_at = "3"
    assert holder.reconcile().action == "failed"
    registry.points_at = "2"
    assert holder.reconcile().action == "loaded"

    body = client.get("/model/history").json()
    assert body["pid"] == os.getpid()
    swaps = body["swaps"]
    assert [(s["kind"], s["version"]) for s in swaps] == [
        ("swap", "2"),
        ("failure", "3"),
        ("swap", "1"),
    ]
    assert swaps[0]["previous_version"] == "1" and swaps[0]["run_id"] == "run-2"
    assert swaps[0]["load_seconds"] >= 0 and swaps[0]["reason"] is None
    assert swaps[1]["reason"] == "ValueError: not a pickle"
    assert swaps[1]["load_seconds"] is None
    assert swaps[2]["previous_version"] is None
    times = [datetime.fromisoformat(s["at"]) for s in swaps]
    assert times == sorted(times, reverse=True)


def test_swap_history_keeps_the_last_n() -> None:
    history = SwapHistory(size=3)
    for version in "12345":
        history.swap_failed(MODEL, version, "no")
    assert [e.version for e in history.events()] == ["5", "4", "3"]
    with pytest.raises(ValueError, match="size"):
        SwapHistory(size=0)


def test_openapi_documents_the_history_routes(api) -> None:
    client, _, _ = api
    paths = client.get("/openapi.json").json()["paths"]
    csv_ok = paths["/predictions.csv"]["get"]["responses"]["200"]
    assert set(csv_ok["content"]) == {"text/csv"}
    params = {p["name"] for p in paths["/predictions"]["get"]["parameters"]}
    assert params == {"model", "version", "source", "label", "since", "until", "before", "limit"}
    assert "/predictions/stats" in paths and "/model/history" in paths

"""The history endpoints against the real stack: `lifecycle serve` on PostgreSQL with iris v1 in
Production, predictions made here through POST /predict and read back over HTTP.

The stack's model name is its own, so only this module's predictions match it. Tests run in
file order: the promotion (last) changes the served version.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import httpx
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import precision_score

from tests.support.api import wait_version
from tests.support.stack import FEATURES, Stack

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

# One row near each iris class, so the classes counted are more than one.
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]
N = 24


@dataclass
class Sent:
    """What /predict answered, in the order sent."""

    ids: list[str]
    labels: dict[str, str]
    features: dict[str, list[float]]


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as c:
        yield c


def _wait_stored(client: httpx.Client, n: int, **params: object) -> list[dict]:
    """The REST store writes off the request path: until the log holds n rows."""
    deadline = time.monotonic() + 20
    while True:
        rows = client.get("/predictions", params={"limit": 1000, **params}).json()["predictions"]
        if len(rows) >= n or time.monotonic() > deadline:
            assert len(rows) == n, f"{len(rows)} of {n} predictions stored"
            return rows
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sent(client: httpx.Client) -> Sent:
    prefix = f"hist-{uuid.uuid4().hex[:6]}"
    result = Sent([], {}, {})
    for i in range(N):
        request_id = f"{prefix}-{i:02d}"
        row = ROWS[i % 3]
        answer = client.post(
            "/predict", json={"features": row}, headers={"X-Request-Id": request_id}
        )
        assert answer.status_code == 200, answer.text
        result.ids.append(request_id)
        result.labels[request_id] = answer.json()["label"]
        result.features[request_id] = row
    _wait_stored(client, N)
    return result


def _all(client: httpx.Client, **params: object) -> list[dict]:
    return client.get("/predictions", params={"limit": 1000, **params}).json()["predictions"]


def test_pages_come_back_newest_first_without_overlap(client: httpx.Client, sent: Sent) -> None:
    seen: list[dict] = []
    pages = 0
    params: dict[str, object] = {"limit": 10}
    while True:
        response = client.get("/predictions", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen += body["predictions"]
        if body["next"] is None:
            break
        params = {"limit": 10, "before": body["next"]}

    assert pages == 3  # 10 + 10 + 4
    assert [row["request_id"] for row in seen] == sent.ids[::-1]
    times = [datetime.fromisoformat(row["created_at"]) for row in seen]
    assert times == sorted(times, reverse=True)
    for row in seen:
        request_id = row["request_id"]
        assert row["features"] == dict(zip(FEATURES, sent.features[request_id], strict=True))
        assert row["label"] == sent.labels[request_id]
        assert row["model_version"] == "1" and row["source"] == "rest"
        assert row["latency_ms"] > 0 and row["run_id"]
        assert set(row["probabilities"]) == {"setosa", "versicolor", "virginica"}


def test_filters_select_what_was_sent(client: httpx.Client, sent: Sent) -> None:
    def ids(**params: object) -> list[str]:
        return [row["request_id"] for row in _all(client, **params)]

    newest_first = sent.ids[::-1]
    assert len(set(sent.labels.values())) > 1
    for label in set(sent.labels.values()):
        assert ids(label=label) == [r for r in newest_first if sent.labels[r] == label]
    assert ids(version="1") == newest_first
    assert ids(version="2") == []
    assert ids(source="rest") == newest_first
    assert ids(source="async") == []
    tenth = _all(client)[9]["created_at"]
    assert ids(since=tenth) == newest_first[:10]
    assert ids(until=tenth) == newest_first[10:]
    assert ids(model=f"not-{uuid.uuid4().hex}") == []


def test_stats_count_what_was_sent_per_version_and_class(client: httpx.Client, sent: Sent) -> None:
    body = client.get("/predictions/stats").json()

    assert sum(b["count"] for b in body["volume"]) == N
    assert {b["model_version"] for b in body["volume"]} == {"1"}
    classes = {(c["model_version"], c["label"]): c["count"] for c in body["classes"]}
    assert classes == {("1", label): n for label, n in Counter(sent.labels.values()).items()}
    [latency] = body["latency"]
    assert latency["model_version"] == "1" and latency["n"] == N
    # PostgreSQL reads them off a log-scale histogram: within 1 % of the exact percentiles.
    exact = np.quantile([row["latency_ms"] for row in _all(client)], [0.5, 0.9, 0.95, 0.99])
    measured = [latency[p] for p in ("p50", "p90", "p95", "p99")]
    assert measured == pytest.approx(exact.tolist(), rel=0.01)
    assert body["quality"] == []
    assert body["bucket_seconds"] == 1800


def test_quality_equals_the_feedback_sent(client: httpx.Client, sent: Sent) -> None:
    # Two wrong answers on one predicted class: precision (macro) differs from accuracy.
    right, wrong = sent.ids[:4], [sent.ids[4], sent.ids[7]]
    given = {request_id: sent.labels[request_id] for request_id in right}
    for request_id in wrong:
        given[request_id] = next(x for x in ("setosa", "virginica") if x != sent.labels[request_id])
    for request_id, label in given.items():
        assert client.post("/feedback", json={"request_id": request_id, "label": label}).is_success

    quality = client.get("/predictions/stats").json()["quality"]
    predicted = [sent.labels[request_id] for request_id in given]
    precision = precision_score(list(given.values()), predicted, average="macro", zero_division=0)
    assert quality == [
        {
            "model_version": "1",
            "n": 6,
            "correct": 4,
            "accuracy": pytest.approx(4 / 6),
            "precision": pytest.approx(precision),
        }
    ]
    feedback = {row["request_id"]: row["feedback"] for row in _all(client) if row["feedback"]}
    assert set(feedback) == {*right, *wrong}


def test_csv_has_the_rows_and_the_feature_columns(
    stack: Stack, client: httpx.Client, sent: Sent
) -> None:
    response = client.get("/predictions.csv", params={"limit": 100_000})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert f'filename="{stack.name}-predictions.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["request_id"] for r in rows] == sent.ids[::-1]
    assert list(rows[0])[-4:] == sorted(FEATURES)
    for row in rows:
        sent_row = dict(zip(FEATURES, sent.features[row["request_id"]], strict=True))
        assert {name: float(row[name]) for name in FEATURES} == sent_row
        assert row["label"] == sent.labels[row["request_id"]]
    assert len(list(csv.DictReader(io.StringIO(client.get("/predictions.csv").text)))) == N


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/predictions", {"limit": 1001}, "limit"),
        ("/predictions", {"source": "kafka"}, "source"),
        ("/predictions", {"since": "not a time"}, "since"),
        ("/predictions", {"before": "eyJ4IjoxfQ"}, "before"),
        ("/predictions", {"version": "a\x00"}, "version"),
        ("/predictions.csv", {"limit": 0}, "limit"),
        ("/predictions/stats", {"bucket": -5}, "bucket"),
        ("/predictions/stats", {"since": "2030-01-01T00:00:00Z", "until": "2029-01-01"}, "until"),
    ],
)
def test_bad_values_are_422_naming_the_field(
    client: httpx.Client, path: str, params: dict, field: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{field}: ")


def _history_of(client: httpx.Client, n: int) -> dict:
    """The holder records a swap just after it makes it: /ready may say so a moment earlier."""
    deadline = time.monotonic() + 5
    while True:
        body = client.get("/model/history").json()
        if len(body["swaps"]) >= n or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_model_history_shows_the_loaded_version_then_the_promotion(
    stack: Stack, client: httpx.Client, sent: Sent
) -> None:
    """Last: it promotes v2."""
    first = client.get("/model/history").json()
    [loaded] = first["swaps"]
    registry = MlflowClient(stack.env["MLFLOW_TRACKING_URI"])
    v1 = registry.get_model_version(stack.name, "1")
    assert loaded["kind"] == "swap" and loaded["version"] == "1"
    assert loaded["run_id"] == v1.run_id and loaded["load_seconds"] > 0
    assert loaded["previous_version"] is None

    # The same artifacts under a second version number: only the version must differ.
    v2 = str(mlflow.register_model(v1.source, stack.name, await_registration_for=0).version)
    registry.transition_model_version_stage(
        stack.name, v2, "Production", archive_existing_versions=True
    )
    wait_version(stack.api.url, v2)

    after = _history_of(client, 2)
    assert after["pid"] == first["pid"]  # one worker: the same process answers
    swap, earlier = after["swaps"]
    assert (swap["kind"], swap["version"], swap["previous_version"]) == ("swap", v2, "1")
    assert swap["load_seconds"] > 0
    assert datetime.fromisoformat(swap["at"]) > datetime.fromisoformat(loaded["at"])
    assert earlier == loaded
    # Predictions of the new version are counted under it.
    assert client.post("/predict", json={"features": ROWS[0]}).status_code == 200
    _wait_stored(client, 1, version=v2)
    volume = client.get("/predictions/stats").json()["volume"]
    per_version: Counter[str] = Counter()
    for bucket in volume:
        per_version[bucket["model_version"]] += bucket["count"]
    assert per_version == {"1": N, v2: 1}

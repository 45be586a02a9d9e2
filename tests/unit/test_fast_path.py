"""The raw ASGI fast path of `/predict` and `/invocations` answers exactly as the FastAPI
routes do (status, headers, body bytes), for good bodies and for every kind of refusal, and
keeps the request id, the metrics and the prediction records of every request."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionStore
from lifecycle.core.store.writer import PredictionLogSaturated
from serving import validation
from serving.api import errors
from serving.api.app import create_app
from serving.api.deps import Services, get_services
from serving.metrics import Metrics
from serving.runtime import ModelHolder, ModelTarget
from tests.support.fixed_model import FixedVersion, load_iris

ROW = [5.1, 3.5, 1.4, 0.2]
NAMES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
JSON = "application/json"
_STAMP = re.compile(rb'"timestamp":"[^"]*"')

# (path, content type or None, body): good bodies first, then one of each refusal.
CASES: list[tuple[str, str | None, bytes]] = [
    ("/predict", JSON, json.dumps({"features": ROW}).encode()),
    ("/predict", JSON, json.dumps({"features": dict(zip(NAMES, ROW, strict=True))}).encode()),
    ("/predict", "application/json; charset=utf-8", json.dumps({"instances": [ROW] * 3}).encode()),
    ("/predict", JSON, b'{"features": [1, 2, 3]}'),
    ("/predict", JSON, b'{"features": [NaN, 2, 3, 4]}'),
    ("/predict", JSON, b'{"features": [1e999, 2, 3, 4]}'),
    ("/predict", JSON, b'{"features": ["a", 2, 3, 4]}'),
    ("/predict", JSON, b'{"features": [1, 2, 3, 123456789012345678901234567890]}'),
    ("/predict", JSON, b'{"features": [1, 2, 3, 4], "extra": 1}'),
    ("/predict", JSON, b'{"instances": []}'),
    ("/predict", JSON, json.dumps({"instances": [ROW] * 6}).encode()),
    ("/predict", JSON, b'{"features": [1, 2,'),
    ("/predict", JSON, b'{"\\ud800": 1}'),
    ("/predict", JSON, b"\xff\xfe"),
    ("/predict", JSON, b" " * 3000),
    ("/predict", "text/csv", b"1,2,3,4"),
    ("/predict", None, json.dumps({"features": ROW}).encode()),
    (
        "/invocations",
        JSON,
        json.dumps({"dataframe_split": {"columns": NAMES, "data": [ROW]}}).encode(),
    ),
    (
        "/invocations",
        JSON,
        json.dumps({"dataframe_records": [dict(zip(NAMES, ROW, strict=True))]}).encode(),
    ),
    (
        "/invocations",
        JSON,
        json.dumps({"inputs": {n: [v, v] for n, v in zip(NAMES, ROW, strict=True)}}).encode(),
    ),
    ("/invocations", "text/csv", (",".join(NAMES) + "\n" + ",".join(map(str, ROW))).encode()),
    ("/invocations", JSON, json.dumps({"dataframe_split": {"data": [ROW]}}).encode()),
    ("/invocations", JSON, json.dumps({"instances": [ROW]}).encode()),
    ("/invocations", JSON, b'{"dataframe_split": {"columns": ["a"], "data": [[NaN]]}}'),
    ("/invocations", JSON, b"[1, 2]"),
    ("/invocations", JSON, b"{"),
    ("/invocations", "text/plain", b"1,2,3,4"),
    ("/invocations", "application/json; charset=latin-1", b"{}"),
    ("/invocations", None, b"{}"),
    ("/invocations", JSON, b" " * 3000),
]


@pytest.fixture(scope="module")
def apps(
    tmp_path_factory: pytest.TempPathFactory, app_database_url: str
) -> Iterator[tuple[TestClient, TestClient, Metrics, PredictionStore]]:
    """The same model served twice: the fast path on (with a real store) and off."""
    settings = Settings(
        database_url=app_database_url,
        data_dir=tmp_path_factory.mktemp("fast"),
        max_batch_rows=5,
        max_body_bytes=2000,
        admin_token=None,
        webhook_secret=None,
    )
    holder = ModelHolder(
        ModelTarget("iris-classifier", stage="Production"), FixedVersion(), load_iris
    )  # type: ignore[arg-type]
    holder.reconcile()
    metrics = Metrics()
    store = PredictionStore.from_settings(settings, observer=metrics)
    fast = create_app(settings, holder, store, metrics=metrics)
    slow = create_app(settings, holder, None, metrics=Metrics(), fast_scoring=False)
    with TestClient(fast) as a, TestClient(slow) as b:
        yield a, b, metrics, store
    store.stop()


def _post(
    client: TestClient, path: str, ctype: str | None, body: bytes, rid: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = {"X-Request-Id": rid}
    if ctype is not None:
        headers["Content-Type"] = ctype
    r = client.post(path, content=body, headers=headers)
    normal = _STAMP.sub(b'"timestamp":"T"', r.content).replace(rid.encode(), b"ID")
    return r.status_code, [(k, v.replace(rid, "ID")) for k, v in r.headers.multi_items()], normal


@pytest.mark.parametrize("case", range(len(CASES)))
def test_the_fast_path_answers_byte_for_byte_as_the_routes(
    apps: tuple[TestClient, TestClient, Metrics, PredictionStore], case: int
) -> None:
    fast, slow, _, _ = apps
    path, ctype, body = CASES[case]
    got = _post(fast, path, ctype, body, f"fast-{case}")
    want = _post(slow, path, ctype, body, f"slow-{case}")
    assert got == want
    assert ("x-request-id", "ID") in got[1]


def _no_framework() -> Services:
    raise AssertionError("FastAPI resolved the route's dependencies")


def test_the_fast_path_is_the_one_answering_and_it_keeps_ids_metrics_and_records(
    apps: tuple[TestClient, TestClient, Metrics, PredictionStore], app_database_url: str
) -> None:
    fast, _, metrics, store = apps
    app = fast.app
    assert isinstance(app, FastAPI)
    # Were FastAPI's route to answer, its dependency would now fail the request.
    app.dependency_overrides[get_services] = _no_framework
    try:
        assert fast.post("/predict", json={"features": ROW}).status_code == 200
        with pytest.raises(AssertionError, match="FastAPI resolved"):  # live on other routes
            fast.get("/model")
    finally:
        app.dependency_overrides.clear()
    ids = [f"fast-record-{i}" for i in range(3)]
    for rid in ids:
        r = fast.post("/predict", json={"features": ROW}, headers={"X-Request-Id": rid})
        assert r.status_code == 200 and r.headers["x-request-id"] == rid
        assert r.json()["request_id"] == rid
    batch = fast.post(
        "/invocations",
        json={"dataframe_split": {"columns": NAMES, "data": [ROW] * 2}},
        headers={"X-Request-Id": "fast-batch"},
    )
    assert batch.json() == {"predictions": [0, 0]}
    generated = fast.post("/predict", json={"features": ROW}, headers={"X-Request-Id": "bad id!"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    text = metrics.render().decode()
    count = re.search(
        r'lifecycle_requests_total\{endpoint="/predict",method="POST",status="200"\} (\S+)', text
    )
    assert count and float(count.group(1)) >= 4
    assert (
        'lifecycle_request_duration_seconds_count{endpoint="/invocations",method="POST",status="200"}'
        in text
    )
    setosa = re.search(
        r'lifecycle_predictions_total\{label="setosa",model="iris-classifier",version="7"\} (\S+)',
        text,
    )
    assert setosa and float(setosa.group(1)) >= 6
    wanted = [*ids, "fast-batch-0", "fast-batch-1"]
    engine = sa.create_engine(app_database_url)
    try:
        stored: list[str] = []
        for _ in range(300):
            store.flush(1.0)
            with engine.connect() as conn:
                stored = sorted(
                    conn.execute(
                        sa.text(
                            "SELECT request_id FROM prediction_rows WHERE request_id = ANY(:ids)"
                        ),
                        {"ids": wanted},
                    ).scalars()
                )
            if len(stored) == len(wanted):
                break
            time.sleep(0.1)
    finally:
        engine.dispose()
    assert stored == sorted(wanted)


def test_a_saturated_prediction_log_is_a_503_with_retry_after_in_both_shapes() -> None:
    exc = PredictionLogSaturated("the prediction log is saturated; retry shortly")
    ours = errors.lifecycle_response(exc)
    theirs = errors.mlflow_error(exc)
    assert (ours.status_code, theirs.status_code) == (503, 503)
    assert ours.headers["retry-after"] == theirs.headers["retry-after"] == "1"
    assert json.loads(theirs.body)["error_code"] == "TEMPORARILY_UNAVAILABLE"


@pytest.mark.parametrize(
    "body",
    [
        b'{"features": [5.1, 3.5, 1.4, 0.2]}',
        b'{"features": [1, 2, 3, 123456789012345678901234567890]}',  # int beyond 64 bits
        b'{"x": [18446744073709551616, -9223372036854775809, 1e999, -0, 2.5e-07]}',
        b'{"a": 1, "a": 2, "\\u00e9": "\\ud83d\\ude00"}',
        b'\xef\xbb\xbf{"bom": true}',
    ],
)
def test_bodies_read_as_pythons_json_reads_them(body: bytes) -> None:
    """orjson reads bodies first; whatever it would read differently goes to json."""
    got = validation.loads(body)
    want = json.loads(body)
    assert repr(got) == repr(want)
    assert [type(v) for v in _leaves(got)] == [type(v) for v in _leaves(want)]


def test_constants_and_surrogates_still_follow_the_json_rules() -> None:
    assert math.isnan(validation.loads(b"[NaN]", constants=True)[0])
    with pytest.raises(validation.InvalidInput, match="NaN is not a valid number"):
        validation.loads(b"[NaN]")
    assert validation.loads(b'["\\ud800"]') == ["\ufffd"]
    with pytest.raises(
        validation.MalformedBody, match="malformed JSON: Expecting value at line 1 column 2"
    ):
        validation.loads(b"[")


def _leaves(value: object) -> list[object]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]

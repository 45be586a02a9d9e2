"""Property: no input gives a 5xx, no accepted task stays pending or started, the API lives.

Against the session's shared stack (API, worker, RabbitMQ, MLflow on PostgreSQL), whose API has
an admin token and a webhook secret, so the admin and webhook routes are reached past their
auth as well as refused by it. Bodies are JSON text written by `json.dumps` (ASCII): lone
surrogates travel as `\\udXXX` escapes (raw UTF-8 cannot carry them), NaN and Infinity as
their non-standard tokens, 10**400 as its digits.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.webhooks import sign
from tests.support.api import IRIS_ROW
from tests.support.stack import ADMIN_TOKEN, FEATURES, WEBHOOK_SECRET, Stack

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

EXTREMES = [1e308, -1e308, 5e-324, -5e-324, 10**400, -(10**400), math.nan, math.inf, -math.inf]

_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(st.one_of(st.characters(), _surrogates), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included
    st.sampled_from(EXTREMES),
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
numbers = st.one_of(st.sampled_from(EXTREMES), st.floats(), st.integers(), texts, st.none())
# Finite but huge: the validator takes them, the model may overflow on them.
huge = st.floats(min_value=1e300, max_value=1.7976931348623157e308) | st.sampled_from(EXTREMES[:4])
row = st.one_of(
    st.lists(huge, min_size=4, max_size=4),
    st.lists(numbers, min_size=4, max_size=4),
    st.fixed_dictionaries({name: numbers for name in FEATURES}),
    values,
)
# Shapes each endpoint reads, so the fuzz reaches the model and the worker, not just the parser.
scoring = st.one_of(
    st.builds(lambda r: {"features": r}, row),
    st.builds(lambda rs: {"instances": rs}, st.lists(row, max_size=3)),
    st.builds(lambda rs: {"dataframe_split": {"columns": FEATURES, "data": rs}}, st.lists(row)),
    st.builds(lambda rs: {"inputs": rs}, st.lists(row, max_size=3)),
)
shaped = st.one_of(
    scoring,
    st.builds(lambda i, label: {"request_id": i, "label": label}, texts, values),
    st.builds(lambda p: {"path": "/tmp/" + p + ".csv"}, texts),
    st.builds(lambda p, o: {"path": p, "output_path": o}, values, values),
    st.builds(lambda a: {"entity": "model_version_alias", "action": a}, texts),
    values,
)
deep = st.integers(1, 5000).map(lambda d: "[" * d + "]" * d)
bodies = st.one_of(shaped.map(json.dumps), values.map(json.dumps), deep, st.text(max_size=40))

SCORING = ["/predict", "/invocations", "/predict/async"]
POSTS = [*SCORING, "/feedback", "/batch", "/reload_model"]
GETS = ["/model", "/ready", "/health", "/metrics"]


@dataclass
class Call:
    method: str
    path: str
    body: str | None
    headers: dict[str, str]


def _post(path: str, body: str, json_type: bool, token: bool) -> Call:
    headers = {"content-type": "application/json" if json_type else "text/csv"}
    if token:
        headers["authorization"] = f"Bearer {ADMIN_TOKEN}"
    return Call("POST", path, body, headers)


def _webhook(body: str, signed: bool) -> Call:
    headers = {"content-type": "application/json"}
    if signed:
        delivery, stamp = uuid.uuid4().hex, str(int(time.time()))
        headers.update(
            {
                "x-mlflow-delivery-id": delivery,
                "x-mlflow-timestamp": stamp,
                "x-mlflow-signature": sign(WEBHOOK_SECRET, delivery, stamp, body),
            }
        )
    return Call("POST", "/webhooks/mlflow", body, headers)


calls = st.one_of(
    st.builds(
        _post, st.sampled_from(SCORING), scoring.map(json.dumps), st.just(True), st.just(False)
    ),
    st.builds(_post, st.sampled_from(POSTS), bodies, st.booleans(), st.booleans()),
    st.builds(_webhook, bodies, st.booleans()),
    st.builds(lambda i: Call("GET", f"/tasks/{i}", None, {}), texts),
    st.builds(lambda i: Call("GET", f"/tasks/never-sent-{i}", None, {}), st.uuids()),
    st.builds(lambda p: Call("GET", p, None, {}), st.sampled_from(GETS)),
)


def _send(client: httpx.Client, call: Call) -> httpx.Response:
    path = httpx.URL(client.base_url).copy_with(raw_path=_quoted(call.path).encode())
    # ASCII by construction (json.dumps escapes), or a lone surrogate sent as bytes it can be.
    content = call.body.encode("utf-8", "surrogatepass") if call.body is not None else None
    return client.request(call.method, path, content=content, headers=call.headers)


def _quoted(path: str) -> str:
    raw = path.encode("utf-8", "surrogatepass")
    safe = b"/-._~abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(chr(b) if b in safe else f"%{b:02X}" for b in raw)


def test_no_input_gives_a_server_error_or_a_stuck_task(shared_stack: Stack) -> None:
    accepted: list[str] = []
    started = time.monotonic()
    client = shared_stack.client()

    @settings(
        max_examples=800,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(call=calls)
    def no_server_error(call: Call) -> None:
        response = _send(client, call)
        assert response.status_code < 500, (call, response.status_code, response.text[:500])
        if call.path.startswith("/tasks/never-sent-"):
            assert response.status_code == 404, (call.path, response.text[:500])
        if response.status_code == 202 and call.path in ("/predict/async", "/batch"):
            accepted.append(response.json()["task_id"])

    try:
        no_server_error()
        assert client.get("/health").status_code == 200
        assert client.post("/predict", json={"features": IRIS_ROW}).status_code == 200
        _all_finished(client, accepted)
    finally:
        client.close()
    assert time.monotonic() - started < 120


def _all_finished(client: httpx.Client, task_ids: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(task_ids)
    states: dict[str, Any] = {}
    while waiting and time.monotonic() < deadline:
        for task_id in list(waiting):
            answer = client.get(f"/tasks/{task_id}")
            assert answer.status_code == 200, answer.text
            states[task_id] = answer.json()
            if states[task_id]["status"] in ("success", "failure"):
                waiting.discard(task_id)
        time.sleep(0.2)
    assert not waiting, {task_id: states.get(task_id) for task_id in waiting}

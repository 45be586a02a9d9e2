"""The Streamlit app (ui/) driven by Streamlit's AppTest against a real stack: the API and the
Celery worker as subprocesses, MLflow on PostgreSQL, RabbitMQ.

Each test opens the app as a browser session would (ui/app.py, then a page), and checks that
the page renders without an exception, shows the stack's real data, and that its actions
reach the API (with the admin token typed into the page, never read from the environment).
"""

from __future__ import annotations

import io
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from lifecycle.core.settings import PROJECT_ROOT
from tests.support.api import IRIS_ROW
from tests.support.stack import FEATURES, Stack, iris_frame
from training.train import TrainRequest, train
from ui.views.history import CSV_KEY
from ui.views.predict import BATCH_KEY

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

APP = PROJECT_ROOT / "ui" / "app.py"
PAGES = ("overview", "predict", "history", "registry", "drift", "model")
RUN_TIMEOUT = 60


# -- driving the app ---------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ui_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "LIFECYCLE_API_URL": stack.api.url,
        "MLFLOW_TRACKING_URI": stack.env["MLFLOW_TRACKING_URI"],
        "LIFECYCLE_MODEL_NAME": stack.name,
        # Set here so the app's fail-fast MLflow settings are undone after the test.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }
    env["LIFECYCLE_WORKER_METRICS_URL"] = stack.worker_metrics_url()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The UI never takes the admin token from its environment, even when it is there: an
    # action without a typed token is refused.
    monkeypatch.setenv("LIFECYCLE_ADMIN_TOKEN", stack.admin_token)
    return env


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Each test is a new server process for the app: settings and clients built again."""
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)
    at.run(timeout=RUN_TIMEOUT)
    if page != "overview":
        at.switch_page(f"views/{page}.py").run(timeout=RUN_TIMEOUT)
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def metric(at: AppTest, label: str) -> list[str]:
    return [m.value for m in at.metric if m.label == label]


def texts(at: AppTest) -> str:
    parts: list[Any] = []
    for kind in ("markdown", "caption", "success", "info", "warning", "error", "title"):
        parts.extend(e.value for e in getattr(at, kind))
    return "\n".join(str(p) for p in parts)


def frames(at: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe]


def click(at: AppTest, label: str) -> AppTest:
    buttons = [b for b in [*at.button, *at.form_submit_button] if b.label == label]
    assert buttons, f"no button {label!r}"
    buttons[0].click().run(timeout=RUN_TIMEOUT)
    assert_clean(at)
    return at


def text_input(at: AppTest, label: str) -> Any:
    found = [t for t in at.text_input if t.label == label]
    assert found, f"no text input {label!r}: {[t.label for t in at.text_input]}"
    return found[0]


def selectbox(at: AppTest, label: str) -> Any:
    found = [s for s in at.selectbox if s.label == label]
    assert found, f"no select box {label!r}: {[s.label for s in at.selectbox]}"
    return found[0]


# -- the stack's data --------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def traffic(stack: Stack, api: httpx.Client) -> list[str]:
    """60 REST predictions of the module's own, stored (enough for a drift report and for a
    second page of History), five of them with feedback."""
    prefix = f"ui-{uuid.uuid4().hex[:8]}"
    ids = []
    for i, row in enumerate(iris_frame(60, seed=3).itertuples(index=False)):
        request_id = f"{prefix}-{i}"
        r = api.post("/predict", json={"features": list(row)}, headers={"x-request-id": request_id})
        assert r.status_code == 200, r.text
        ids.append(request_id)
    _stored(stack, ids[-1])
    for request_id, label in zip(ids[:5], ["setosa", "versicolor", "virginica"] * 2, strict=False):
        r = api.post("/feedback", json={"request_id": request_id, "label": label})
        assert r.status_code == 200, r.text
    return ids


def _stored(stack: Stack, request_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.stored("request_id = :r", r=request_id):
            return
        time.sleep(0.1)
    raise AssertionError(f"{request_id} not stored in {timeout}s")


def _served(api: httpx.Client, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.get("/model").json()
        if body.get("version") == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"API did not serve v{version} within {timeout}s: {body}")


# -- pages -------------------------------------------------------------------------------


def test_every_page_renders_with_the_stacks_data(ui_env: dict[str, str]) -> None:
    for page in PAGES:
        at = open_page(page)
        assert not errors(at), (page, errors(at))
        assert any("read at" in c.value for c in at.caption), page


def test_overview_shows_the_served_versions_health_traffic_and_links(
    ui_env: dict[str, str], stack: Stack, traffic: list[str], api: httpx.Client
) -> None:
    at = open_page("overview")
    assert not errors(at)
    versions = metric(at, "version")
    assert versions[0] == "1"  # the API's
    assert versions[1] == "1"  # the worker's, from its own /metrics
    assert metric(at, "ready") == ["ready"]
    assert metric(at, "registry") == ["ok"]
    assert metric(at, "requests/s") == ["n/a"]
    assert "First read" in texts(at)
    links = texts(at)
    assert f"{stack.api.url}/docs" in links and stack.env["MLFLOW_TRACKING_URI"] in links

    for _ in range(5):
        assert api.post("/predict", json={"features": IRIS_ROW}).status_code == 200
    assert api.post("/predict", json={"features": [1, 2]}).status_code == 422
    click(at, "Refresh")
    rate = metric(at, "requests/s")[0]
    assert rate != "n/a" and float(rate) > 0
    assert metric(at, "refused (4xx)")[0].endswith("%")
    assert metric(at, "latency p50")[0].endswith(" ms")


def test_predict_form_scores_with_training_hints_and_shows_the_apis_refusal(
    ui_env: dict[str, str],
) -> None:
    at = open_page("predict")
    field = text_input(at, FEATURES[0])
    assert field.value  # the training median, prefilled
    assert field.help and field.help.startswith("training range ")
    click(at, "Predict")
    assert not errors(at)
    assert metric(at, "version") == ["1"]
    assert metric(at, "class")[0] in {"setosa", "versicolor", "virginica"}
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")  # probabilities

    text_input(at, FEATURES[1]).input("abc")
    click(at, "Predict")
    assert errors(at) == [f"features: feature '{FEATURES[1]}' must be a number, got 'abc'"]
    assert not metric(at, "class")


def test_predict_scores_an_uploaded_csv_and_refuses_empty_files(ui_env: dict[str, str]) -> None:
    at = open_page("predict")
    data = iris_frame(25, seed=5).to_csv(index=False).encode()
    at.file_uploader[0].set_value(("flowers.csv", data, "text/csv"))
    at.run(timeout=RUN_TIMEOUT)
    click(at, "Score the file")
    assert not errors(at)
    batch = at.session_state[BATCH_KEY]
    scored = pd.read_csv(io.BytesIO(batch["data"]))
    assert len(scored) == 25 and {"prediction", "label", "model_version"} <= set(scored.columns)
    assert batch["file_name"] == "flowers.scored.csv"
    assert [getattr(b, "label", None) for b in at.get("download_button")] == [
        "Download the scored file"
    ]
    assert "25 rows scored by version 1" in texts(at)

    at.file_uploader[0].set_value(("empty.csv", b"", "text/csv"))
    at.run(timeout=RUN_TIMEOUT)
    click(at, "Score the file")
    assert errors(at) == ["empty.csv: upload is empty: send the file as the request body"]

    header = (",".join(FEATURES) + "\n").encode()
    at.file_uploader[0].set_value(("header.csv", header, "text/csv"))
    at.run(timeout=RUN_TIMEOUT)
    click(at, "Score the file")
    [message] = errors(at)
    assert message.startswith("header.csv was not scored: ") and "has no rows" in message


def test_history_shows_a_prediction_made_here_and_takes_feedback(
    ui_env: dict[str, str], stack: Stack, traffic: list[str]
) -> None:
    at = open_page("predict")
    click(at, "Predict")
    request_id = at.session_state["predict:last"]["request_id"]
    _stored(stack, request_id)

    at.switch_page("views/history.py").run(timeout=RUN_TIMEOUT)
    assert_clean(at)
    assert not errors(at)
    table = next(f for f in frames(at) if "request id" in f.columns)
    assert table["request id"].iloc[0] == request_id, table.head(5).to_dict("records")

    text_input(at, "Request id").input(request_id)
    selectbox(at, "True class").select("virginica")
    click(at, "Send feedback")
    assert not errors(at)
    assert f"Recorded virginica for {request_id}." in texts(at)

    at.run(timeout=RUN_TIMEOUT)
    table = next(f for f in frames(at) if "request id" in f.columns)
    assert table["feedback"].iloc[0] == "virginica"
    quality = next(f for f in frames(at) if "accuracy" in f.columns)
    assert quality["n"].sum() >= 6
    assert quality["precision"].between(0, 1).all()

    click(at, "Prepare a CSV of the filtered rows (up to 10,000)")
    assert [getattr(b, "label", None) for b in at.get("download_button")] == ["Download CSV"]
    exported = pd.read_csv(io.BytesIO(at.session_state[CSV_KEY]["data"]))
    assert request_id in set(exported["request_id"])

    text_input(at, "Request id").input("no-such-request")
    click(at, "Send feedback")
    assert errors(at) and "no-such-request" in errors(at)[0]

    # Paging: the second page holds older rows only, and Previous returns to the first.
    first = list(next(f for f in frames(at) if "request id" in f.columns)["request id"])
    assert len(first) == 50
    click(at, "Next")
    second = list(next(f for f in frames(at) if "request id" in f.columns)["request id"])
    assert second and not set(first) & set(second)
    assert "page 2" in texts(at)
    click(at, "Previous")
    assert list(next(f for f in frames(at) if "request id" in f.columns)["request id"]) == first

    selectbox(at, "Source").select("batch")
    at.run(timeout=RUN_TIMEOUT)
    batch_rows = next((f for f in frames(at) if "request id" in f.columns), None)
    assert batch_rows is None or request_id not in set(batch_rows["request id"])


@pytest.fixture(scope="module")
def v2(stack: Stack) -> str:
    result = train(
        stack.settings, TrainRequest(dataset="iris", register=True, model_name=stack.name)
    )
    return str(result.version)


def _registry_form(at: AppTest, version: str, token: str | None) -> None:
    selectbox(at, "Version").select(version)
    text_input(at, "Reason (recorded in the audit tags)").input("ui test")
    text_input(at, "Admin token").input(token or "")


def test_registry_promotes_with_the_token_and_refuses_without_it(
    ui_env: dict[str, str], stack: Stack, v2: str, api: httpx.Client
) -> None:
    at = open_page("registry")
    versions = next(f for f in frames(at) if "stage" in f.columns)
    assert dict(zip(versions["version"], versions["stage"], strict=True)) == {
        "1": "Production",
        v2: "None",
    }

    _registry_form(at, v2, None)
    click(at, "Promote")
    assert errors(at) and "token" in errors(at)[0].lower()
    _registry_form(at, v2, "wrong-token")
    click(at, "Promote")
    assert errors(at) and "token" in errors(at)[0].lower()
    assert _stages(at)[v2] == "None"

    _registry_form(at, v2, stack.admin_token)
    click(at, "Check gates")
    assert not errors(at)
    assert f"Version {v2} would pass the gates for Production." in texts(at)

    _registry_form(at, v2, stack.admin_token)
    click(at, "Promote")
    assert not errors(at)
    assert f"Promoted {stack.name} version {v2} to Production (was version 1)." in texts(at)
    assert _stages(at) == {"1": "Archived", v2: "Production"}
    assert f"Version {v2}: its last promote" in [e.label for e in at.expander]
    _served(api, v2)

    _registry_form(at, v2, stack.admin_token)
    click(at, "Roll back")
    assert not errors(at)
    assert f"Rolled back {stack.name} version 1 to Production" in texts(at)
    assert _stages(at)["1"] == "Production"
    _served(api, "1")

    # Side by side: metrics, parameters and both confusion matrices.
    assert any(set(f.columns) >= {"v1", f"v{v2}"} for f in frames(at))
    assert len(at.image) == 2
    assert "no confusion matrix logged" not in texts(at)


def test_registry_shows_a_refused_promotion_with_its_gate_table(
    ui_env: dict[str, str], stack: Stack, v2: str
) -> None:
    weak = train(
        stack.settings,
        TrainRequest(dataset="iris", params={"C": 0.01}, register=True, model_name=stack.name),
    )
    at = open_page("registry")
    _registry_form(at, str(weak.version), stack.admin_token)
    click(at, "Promote")
    [refusal] = errors(at)
    assert "quality" in refusal or "f1_macro" in refusal, refusal
    # The refusal's table is the page's last gate table (the audits of earlier versions come first).
    gates = [f for f in frames(at) if "gate" in f.columns][-1]
    assert dict(zip(gates["gate"], gates["passed"], strict=True))["quality"] == False  # noqa: E712
    assert _stages(at)[str(weak.version)] == "None"


def _stages(at: AppTest) -> dict[str, str]:
    versions = next(f for f in frames(at) if "stage" in f.columns)
    return dict(zip(versions["version"], versions["stage"], strict=True))


def test_drift_runs_a_report_and_shows_it(
    ui_env: dict[str, str], stack: Stack, traffic: list[str]
) -> None:
    at = open_page("drift")
    text_input(at, "Admin token").input("wrong-token")
    click(at, "Run a report now")
    assert errors(at) and "token" in errors(at)[0].lower()

    text_input(at, "Admin token").input(stack.admin_token)
    click(at, "Run a report now")
    assert not errors(at), (errors(at), stack.worker.logs()[-4000:])
    made = next(s.value for s in at.success if s.value.startswith("Report "))
    report_id = made.split()[1]

    at.run(timeout=RUN_TIMEOUT)
    assert_clean(at)
    reports = next(f for f in frames(at) if "verdict" in f.columns)
    assert report_id in set(reports["id"])
    features = next(f for f in frames(at) if "feature" in f.columns)
    assert set(features["feature"]) == set(FEATURES)
    assert at.get("iframe") or at.get("html")  # the Evidently page, embedded


def test_model_management_reloads_with_the_token_and_shows_the_swaps(
    ui_env: dict[str, str], stack: Stack
) -> None:
    at = open_page("model")
    text_input(at, "Admin token").input("wrong-token")
    click(at, "Reload model")
    assert errors(at) and "token" in errors(at)[0].lower()

    text_input(at, "Admin token").input(stack.admin_token)
    click(at, "Reload model")
    assert not errors(at)
    [done] = [s.value for s in at.success]
    assert done.startswith("Reload: ") and "serving version" in done
    swaps = next(f for f in frames(at) if "kind" in f.columns)
    assert "1" in set(swaps["version"]) and "swap" in set(swaps["kind"])
    assert metric(at, "API serves version") in (["1"], ["2"])


def test_the_api_down_is_a_message_on_every_page(
    ui_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("LIFECYCLE_API_URL", down)
    for page in PAGES:
        at = open_page(page)
        if page == "registry":
            # Its tables come from MLflow, which is up; its actions need the API.
            _registry_form(at, "1", "any-token")
            click(at, "Check gates")
        assert any(f"The API at {down} is not reachable" in e for e in errors(at)), (
            page,
            errors(at),
        )

"""The report endpoints against the real stack: the index on PostgreSQL, artifacts on the real
MLflow server, `POST /reports` through RabbitMQ to `lifecycle worker`.

The session's shared stack (API with the admin token, worker, iris v1 in Production): reports
of its model are made only here. Index entries are added with `ReportIndex.add` under model
names of their own, so other modules' reports never match. Tests run in file order: the real
report (last but one) reads predictions the API stored. The API without a token refusing
`POST /reports` is tests/unit/test_scoring_app.py's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa

from lifecycle.core.store.report_index import FeatureDrift, ReportEntry, ReportIndex
from tests.support.api import assert_schemathesis_passed, run_schemathesis, serve_api
from tests.support.services import TrackingServer, temp_database
from tests.support.stack import FEATURES, Stack, iris_frame
from tests.support.worker import rabbit_vhost, wait_task

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def stack(shared_stack: Stack) -> Stack:
    return shared_stack


@pytest.fixture(scope="module")
def index(app_database_url: str) -> Iterator[ReportIndex]:
    reports = ReportIndex(app_database_url)
    yield reports
    reports.dispose()


def _entry(
    model: str,
    version: str = "1",
    verdict: str = "no_drift",
    age: timedelta = timedelta(0),
    artifacts: dict[str, str] | None = None,
) -> ReportEntry:
    drifted = verdict == "drift"
    return ReportEntry(
        id=uuid.uuid4().hex,
        created_at=datetime.now(UTC) - age,
        model_name=model,
        model_version=version,
        window={"version": None, "last": 500, "since": None, "until": None},
        rows=500,
        sampled_rows=500,
        reference_rows=120,
        labelled_rows=0,
        drift_share=0.5 if drifted else 0.0,
        drifted_features=FEATURES[:2] if drifted else [],
        verdict=verdict,
        features=[
            FeatureDrift(f, "numeric", "ks", 0.01 if drifted else 0.4, 0.05, drifted)
            for f in FEATURES
        ],
        artifacts=artifacts or {},
    )


def _model() -> str:
    return f"reports-{uuid.uuid4().hex[:8]}"


def test_list_filters_newest_first_and_refuses_bad_filters(
    stack: Stack, index: ReportIndex
) -> None:
    model, other = _model(), _model()
    old = _entry(model, "1", "no_drift", age=timedelta(hours=2))
    new = _entry(model, "2", "drift", age=timedelta(hours=1))
    index.add(old)
    index.add(new)
    index.add(_entry(other, "1", "drift"))
    with stack.client() as client:
        listed = client.get("/reports", params={"model": model})
        assert listed.status_code == 200, listed.text
        assert listed.json() == {"reports": [new.to_json(), old.to_json()]}

        def ids(**params: object) -> list[str]:
            answer = client.get("/reports", params={"model": model, **params})
            assert answer.status_code == 200, answer.text
            return [r["id"] for r in answer.json()["reports"]]

        assert ids(verdict="drift") == [new.id]
        assert ids(verdict="no_drift") == [old.id]
        assert ids(version="1") == [old.id]
        assert ids(limit=1) == [new.id]
        everything = client.get("/reports", params={"limit": 500}).json()["reports"]
        assert {new.id, old.id} <= {r["id"] for r in everything}

        for params, field in [
            ({"verdict": "maybe"}, "verdict"),
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"limit": "many"}, "limit"),
        ]:
            refused = client.get("/reports", params=params)
            assert refused.status_code == 422, (params, refused.text)
            assert refused.json()["detail"].startswith(f"{field}: "), refused.text


def test_latest_and_one_report_by_id(stack: Stack, index: ReportIndex) -> None:
    model = _model()
    first, second = _entry(model, age=timedelta(minutes=5)), _entry(model, "2", "drift")
    index.add(first)
    index.add(second)
    # The served model's report, older than anything the real report below will write.
    served = _entry(stack.name, age=timedelta(days=1))
    index.add(served)
    with stack.client() as client:
        assert client.get("/reports/latest", params={"model": model}).json() == second.to_json()
        assert client.get("/reports/latest").json() == served.to_json()
        missing = client.get("/reports/latest", params={"model": "no-such-model"})
        assert missing.status_code == 404
        assert missing.json() == {"detail": "no report for model no-such-model yet"}

        assert client.get(f"/reports/{first.id}").json() == first.to_json()
        unknown = client.get(f"/reports/{uuid.uuid4().hex}")
        assert unknown.status_code == 404 and "no report with id" in unknown.json()["detail"]
        bad = client.get("/reports/not%20an%20id")
        assert bad.status_code == 422 and bad.json()["detail"].startswith("report_id: ")


def test_html_is_fetched_from_the_tracking_server(
    stack: Stack, index: ReportIndex, pg_tracking: TrackingServer, app_database_url: str
) -> None:
    mlflow.set_tracking_uri(pg_tracking.uri)
    drift_page = f"<html><body>drift {uuid.uuid4().hex}</body></html>"
    quality_page = f"<html><body>quality {uuid.uuid4().hex}</body></html>"
    with mlflow.start_run(run_name="report-html") as run:
        mlflow.log_text(drift_page, "drift.html")
        mlflow.log_text(quality_page, "quality.html")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    both = _entry(
        _model(),
        artifacts={
            "drift_html": f"{run.info.artifact_uri}/drift.html",
            "quality_html": f"runs:/{run.info.run_id}/quality.html",
        },
    )
    drift_only = _entry(_model(), artifacts={"drift_html": f"runs:/{run.info.run_id}/drift.html"})
    # An artifact server that refuses connections: the tracking server is down for this one.
    down = _entry(
        _model(), artifacts={"drift_html": "mlflow-artifacts://127.0.0.1:9/0/x/artifacts/d.html"}
    )
    for entry in (both, drift_only, down):
        index.add(entry)
    try:
        with stack.client() as client:
            page = client.get(f"/reports/{both.id}.html")
            assert page.status_code == 200, page.text
            assert page.headers["content-type"].startswith("text/html")
            assert page.text == drift_page
            quality = client.get(f"/reports/{both.id}.html", params={"part": "quality"})
            assert quality.status_code == 200 and quality.text == quality_page
            assert client.get(f"/reports/{drift_only.id}.html").text == drift_page

            no_quality = client.get(f"/reports/{drift_only.id}.html", params={"part": "quality"})
            assert no_quality.status_code == 404
            assert no_quality.json() == {"detail": f"report {drift_only.id} has no quality report"}
            bad_part = client.get(f"/reports/{both.id}.html", params={"part": "other"})
            assert bad_part.status_code == 422 and bad_part.json()["detail"].startswith("part: ")
            unknown = client.get(f"/reports/{uuid.uuid4().hex}.html")
            assert unknown.status_code == 404 and "no report with id" in unknown.json()["detail"]

            unavailable = client.get(f"/reports/{down.id}.html")
            assert unavailable.status_code == 503, unavailable.text
            detail = unavailable.json()["detail"]
            assert (
                detail.startswith("report artifact not fetched from MLflow") and "\n" not in detail
            )
    finally:
        # The session's application database is shared with the other API modules, whose
        # schemathesis runs follow /reports links: an entry whose artifact server is down
        # would answer them 503 (correctly) and fail their "no server error" check.
        engine = sa.create_engine(app_database_url)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM reports WHERE id = :id"), {"id": down.id})
        engine.dispose()


def test_post_reports_needs_the_admin_token(stack: Stack) -> None:
    with stack.client() as client:
        anonymous = client.post("/reports", json={})
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/reports", json={}, headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 403

        for body, field in [
            ({"since": "yesterday"}, "since"),
            ({"last": 0}, "last"),
            ({"last": "10"}, "last"),
            ({"model": 3}, "model"),
            ({"window": "2h"}, "window"),
        ]:
            refused = client.post("/reports", json=body, headers=stack.admin_headers())
            assert refused.status_code == 422, (body, refused.text)
            assert refused.json()["detail"].startswith(f"{field}: "), refused.text
        not_json = client.post("/reports", content="last=5", headers=stack.admin_headers())
        assert not_json.status_code == 415


def test_post_reports_queues_a_task_that_fails_for_an_unknown_version(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/reports", json={"version": "987"}, headers=stack.admin_headers())
        assert response.status_code == 202, response.text
        answer = response.json()
        task_id = answer["task_id"]
        assert answer == {
            "task_id": task_id,
            "kind": "report",
            "status": "pending",
            "status_url": f"/tasks/{task_id}",
        }
        assert response.headers["location"] == f"/tasks/{task_id}"
        # Known to the ledger: any API sharing the database answers for it, never 404.
        assert client.get(f"/tasks/{task_id}").status_code == 200
        failed = wait_task(client, task_id, timeout=90, until=("failure",))
    assert "987" in failed["error"], failed
    assert "\n" not in failed["error"]


def test_a_real_report_on_served_predictions_is_the_latest(stack: Stack) -> None:
    rows = iris_frame(300, seed=7).to_numpy().tolist()
    marker = f"reports-{uuid.uuid4().hex[:8]}"
    with stack.client() as client:
        for start in range(0, len(rows), 50):
            batch = {"instances": rows[start : start + 50]}
            headers = {"X-Request-Id": f"{marker}-{start}"}
            assert client.post("/predict", json=batch, headers=headers).status_code == 200
    _wait_stored(stack, f"{marker}-%", len(rows))
    with stack.client() as client:
        body = {"last": 300, "since": "1h"}
        response = client.post("/reports", json=body, headers=stack.admin_headers())
        assert response.status_code == 202, response.text
        done = wait_task(client, response.json()["task_id"], timeout=240)
        entry = done["result"]
        assert entry["model_name"] == stack.name and entry["model_version"] == "1"
        assert entry["verdict"] in ("drift", "no_drift") and entry["rows"] == 300
        latest = client.get("/reports/latest")
        assert latest.status_code == 200 and latest.json()["id"] == entry["id"]
        assert client.get(f"/reports/{entry['id']}").json() == latest.json()
        page = client.get(f"/reports/{entry['id']}.html")
        assert page.status_code == 200 and "<html" in page.text.lower()


def _wait_stored(stack: Stack, pattern: str, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(stack.stored("request_id LIKE :p", p=pattern)) < n:
        assert time.monotonic() < deadline, "the predictions were not stored in time"
        time.sleep(0.2)


# 413 (body over the size limit) refuses a request as surely as 400 or 422, but is not in
# schemathesis's default list (as in test_serving.py).
_CONTRACT = """
[checks.negative_data_rejection]
expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx",
]
"""


def test_report_operations_keep_their_openapi_contract(
    stack: Stack, tmp_path: Path, pg_tracking: TrackingServer
) -> None:
    """Every schemathesis check on the /reports operations, against an API of their own: its
    index holds only reports whose artifacts exist (the other tests add one whose artifact
    server is down, a 503 by design), and its broker is a vhost no worker reads, so the reports
    it queues are never made."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(_CONTRACT)
    mlflow.set_tracking_uri(pg_tracking.uri)
    with mlflow.start_run(run_name="report-contract") as run:
        mlflow.log_text("<html><body>drift</body></html>", "drift.html")
        mlflow.log_text("<html><body>quality</body></html>", "quality.html")
    artifacts = {
        "drift_html": f"{run.info.artifact_uri}/drift.html",
        "quality_html": f"{run.info.artifact_uri}/quality.html",
    }
    with temp_database("lc_reports") as database, rabbit_vhost() as broker:
        seeded = ReportIndex(database)
        seeded.add(_entry(stack.name, "1", "drift", artifacts=artifacts))
        seeded.add(_entry(stack.name, "1", "no_drift", age=timedelta(hours=1), artifacts=artifacts))
        seeded.dispose()
        env = {
            **stack.env,
            "LIFECYCLE_DATABASE_URL": database,
            "LIFECYCLE_BROKER_URL": broker,
        }
        with serve_api(env, tmp_path / "api") as api:
            result = run_schemathesis(
                api.url,
                tmp_path / "report",
                stack.admin_token,
                "--include-path-regex",
                "^/reports",
                "--checks",
                "all",
                config=config,
            )
    assert_schemathesis_passed(result)
    assert "Selected: 5/" in result.stdout, result.stdout[-4000:]

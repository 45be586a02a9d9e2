"""The report routes over a real SQLite index, no broker or tracking server: routing, the
405 contract and the answers' shape. The real services are in
tests/integration/test_reports_api.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from lifecycle.core.settings import Settings
from lifecycle.core.store.report_index import FeatureDrift, ReportEntry, ReportIndex
from serving.api.app import create_app
from serving.runtime import MlflowRegistryProbe, ModelHolder, ModelTarget


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, ReportIndex]]:
    # Port 9 refuses connections: no registry, no tracking server, no model.
    client = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
    holder = ModelHolder(ModelTarget("iris", stage="Production"), MlflowRegistryProbe(client))
    index = ReportIndex(f"sqlite:///{tmp_path / 'app.db'}")
    settings = Settings(
        admin_token="token",
        webhook_secret=None,
        data_dir=tmp_path,
        tracking_uri="http://127.0.0.1:9",
    )
    yield TestClient(create_app(settings, holder, reports=index)), index
    index.dispose()


def _entry(report_id: str) -> ReportEntry:
    return ReportEntry(
        id=report_id,
        created_at=datetime.now(UTC),
        model_name="iris",
        model_version="1",
        window={"last": 10},
        rows=10,
        sampled_rows=10,
        reference_rows=10,
        labelled_rows=0,
        drift_share=0.0,
        drifted_features=[],
        verdict="no_drift",
        features=[FeatureDrift("a", "numeric", "ks", 0.5, 0.05, False)],
    )


def test_an_html_path_is_not_taken_for_a_report_id(
    app: tuple[TestClient, ReportIndex],
) -> None:
    client, index = app
    report_id = uuid.uuid4().hex
    entry = _entry(report_id)
    index.add(entry)
    assert client.get(f"/reports/{report_id}").json() == entry.to_json()
    page = client.get(f"/reports/{report_id}.html")
    # Reached the .html route: the entry has no drift page, which only that route says.
    assert page.status_code == 404
    assert page.json() == {"detail": f"report {report_id} has no drift report"}
    assert client.get("/reports/latest").json()["id"] == report_id


def test_a_wrong_method_names_every_method_of_the_path(
    app: tuple[TestClient, ReportIndex],
) -> None:
    client, _ = app
    refused = client.delete("/reports")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, POST"
    assert refused.json() == {"detail": "Method Not Allowed"}


def test_report_errors_on_the_html_route_are_documented_as_json(
    app: tuple[TestClient, ReportIndex],
) -> None:
    client, _ = app
    paths = client.get("/openapi.json").json()["paths"]
    assert list(paths).index("/reports/{report_id}.html") < list(paths).index(
        "/reports/{report_id}"
    )
    html = paths["/reports/{report_id}.html"]["get"]["responses"]
    assert set(html["200"]["content"]) == {"text/html"}
    for code in ("404", "422", "503"):
        assert set(html[code]["content"]) == {"application/json"}

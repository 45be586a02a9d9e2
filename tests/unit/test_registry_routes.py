"""The registry routes' refusals, the batch download's path rule and batch progress, without a
tracking server or a broker. The real stack (promotion, rollback, a batch upload downloaded
back) is in tests/integration/test_registry_api.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from lifecycle.core.errors import NotFound
from lifecycle.core.settings import Settings
from serving.api.app import create_app
from serving.batch_files import PROGRESS_STATE, progress_rows, score_file
from serving.batch_output import task_output
from serving.runtime import MlflowRegistryProbe, ModelHolder, ModelTarget
from serving.wiring import Runtime
from tests.unit.test_async_scoring import _frame
from tests.unit.test_async_scoring import runtime as runtime  # a fixture, re-exported

TOKEN = {"Authorization": "Bearer token"}
ROUTES = {
    "/registry/gates": {"name": "iris", "version": "2"},
    "/registry/promote": {"name": "iris", "version": "2", "reason": "better"},
    "/registry/rollback": {"name": "iris"},
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    # Port 9 refuses connections: no registry, no tracking server, no model.
    mlflow = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
    holder = ModelHolder(ModelTarget("iris", stage="Production"), MlflowRegistryProbe(mlflow))
    settings = Settings(
        admin_token="token",
        webhook_secret=None,
        data_dir=tmp_path,
        tracking_uri="http://127.0.0.1:9",
        tracking_timeout=1,
    )
    with TestClient(create_app(settings, holder)) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ROUTES)
def test_registry_actions_need_the_admin_token(client: TestClient, path: str) -> None:
    anonymous = client.post(path, json=ROUTES[path])
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"] == "Bearer"
    wrong = client.post(path, json=ROUTES[path], headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 403 and wrong.json() == {"detail": "admin token is wrong"}


@pytest.mark.parametrize("path", ROUTES)
def test_past_the_token_the_registry_is_asked_and_its_outage_is_a_503(
    client: TestClient, path: str
) -> None:
    answer = client.post(path, json=ROUTES[path], headers=TOKEN)
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"].startswith("MLflow tracking server unreachable")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/registry/gates", {"name": "iris", "version": "2", "stage": "Archived"}, "stage"),
        ("/registry/promote", {"name": "iris", "version": "2", "stage": 1}, "stage"),
        ("/registry/promote", {"name": "iris"}, "version"),
        ("/registry/promote", {"name": "iris", "version": 2}, "version"),
        ("/registry/promote", {"name": "iris", "version": "2", "force": "yes"}, "force"),
        ("/registry/promote", {"name": "iris", "version": "2", "reason": "a\x00b"}, "reason"),
        ("/registry/rollback", {"name": ""}, "name"),
        ("/registry/rollback", {"name": "iris", "version": "1"}, "version"),
    ],
)
def test_a_bad_field_is_a_422_naming_it(
    client: TestClient, path: str, body: dict[str, object], field: str
) -> None:
    refused = client.post(path, json=body, headers=TOKEN)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith(f"{field}: "), refused.text


def test_a_bad_stage_is_worded_like_the_cli_and_any_case_is_taken(client: TestClient) -> None:
    refused = client.post(
        "/registry/gates", json={"name": "iris", "version": "2", "stage": "None"}, headers=TOKEN
    )
    assert refused.json() == {
        "detail": "stage: invalid stage 'None'; expected one of Production, Staging"
    }
    # A lone surrogate, as JSON escapes carry it: not echoed.
    odd = client.post(
        "/registry/gates",
        content=b'{"name": "iris", "version": "2", "stage": "\\ud800"}',
        headers={**TOKEN, "content-type": "application/json"},
    )
    assert odd.json() == {"detail": "stage: invalid stage; expected one of Production, Staging"}
    # "staging" passes validation and reaches the registry (here: unreachable).
    lower = client.post(
        "/registry/gates", json={"name": "iris", "version": "2", "stage": "staging"}, headers=TOKEN
    )
    assert lower.status_code == 503, lower.text


def test_openapi_documents_the_new_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ROUTES:
        post = paths[path]["post"]
        assert post["tags"] == ["registry"]
        assert {"401", "403", "404", "422"} <= set(post["responses"])
    assert "409" in paths["/registry/promote"]["post"]["responses"]
    output = paths["/batch/{task_id}/output"]["get"]
    assert set(output["responses"]["200"]["content"]) == {
        "text/csv",
        "application/vnd.apache.parquet",
    }
    status = client.get("/openapi.json").json()["components"]["schemas"]["TaskStatus"]
    assert "progress" in status["properties"]


def test_batch_output_without_async_scoring_is_a_503(client: TestClient) -> None:
    answer = client.get("/batch/abc/output")
    assert answer.status_code == 503
    assert answer.json() == {"detail": "async scoring is not configured on this server"}


def test_only_a_file_the_task_reported_inside_the_batch_folder_is_served(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    (batch / "out").mkdir(parents=True)
    scored = batch / "out" / "t1.scored.csv"
    scored.write_text("a,prediction\n1,0\n")
    found = task_output("t1", {"output": str(scored)}, batch)
    assert (found.path, found.media_type, found.filename) == (
        scored.resolve(),
        "text/csv",
        "t1.scored.csv",
    )
    parquet = batch / "out" / "t2.scored.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(parquet)
    assert task_output("t2", {"output": str(parquet)}, batch).media_type == (
        "application/vnd.apache.parquet"
    )

    outside = tmp_path / "elsewhere.csv"
    outside.write_text("a\n1\n")
    link = batch / "out" / "link.csv"
    link.symlink_to(outside)
    for result, message in [
        ({"output": str(outside)}, "outside the batch folder"),
        ({"output": str(link)}, "outside the batch folder"),
        ({"output": str(batch / "out" / ".." / ".." / "elsewhere.csv")}, "outside"),
        ({"output": str(batch / "out" / "gone.csv")}, "no longer exists"),
        ({"output": str(batch / "out")}, "no longer exists"),
        ({"predictions": []}, "has no output file"),
        ({"output": 3}, "has no output file"),
        ("a string", "has no output file"),
    ]:
        with pytest.raises(NotFound, match=message):
            task_output("t1", result, batch)


def test_progress_is_read_only_from_a_progress_state() -> None:
    assert progress_rows(PROGRESS_STATE, {"rows": 14}) == 14
    assert progress_rows(PROGRESS_STATE, {"rows": 0}) == 0
    assert progress_rows("STARTED", {"pid": 1, "hostname": "w"}) is None
    assert progress_rows(PROGRESS_STATE, {"rows": "14"}) is None
    assert progress_rows(PROGRESS_STATE, {"rows": True}) is None
    assert progress_rows(PROGRESS_STATE, None) is None


def test_a_file_reports_its_rows_after_every_chunk(
    runtime: Runtime,
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.csv"
    _frame(50, list(runtime.holder.get().schema.names)).to_csv(source, index=False)
    heard: list[int] = []
    result = score_file(runtime, "progress", str(source), progress=heard.append)
    # batch_chunk_rows is 7 in this runtime.
    assert heard == [7, 14, 21, 28, 35, 42, 49, 50] and result["rows"] == 50

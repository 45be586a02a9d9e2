"""`/invocations`, `/ping` and `/version` against a real `mlflow models serve`, case by case.

One registered iris model on the session's PostgreSQL tracking server, served by MLflow's
own scoring server and by Lifecycle in the same run. Every case of `mlflow_compat_cases` is
sent to both: same status, same error body keys and `error_code`, same predictions. Where
Lifecycle differs on purpose the case says so (docs/serving.md lists why).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from mlflow.version import VERSION

from benchmarks.run import start
from lifecycle.core.settings import Settings
from tests.integration.mlflow_compat_cases import CASES, MAX_BYTES, MAX_ROWS, ROW, ROW2, Case
from tests.support.api import serve_api
from tests.support.services import TrackingServer, free_port
from training.train import TrainRequest, train

pytestmark = pytest.mark.postgres

NAME = "compat-iris"
# MLflow attaches its server-side traceback to some errors; Lifecycle never sends one.
_MLFLOW_ONLY_KEYS = {"stack_trace"}


@dataclass(frozen=True)
class Servers:
    mlflow: str
    lifecycle: str
    names: list[str]


@pytest.fixture(scope="module")
def servers(
    pg_tracking: TrackingServer, app_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    workdir = tmp_path_factory.mktemp("mlflow-compat")
    settings = Settings(
        tracking_uri=pg_tracking.uri,
        database_url=app_database_url,
        data_dir=workdir / "data",
        experiment_name="mlflow-compat",
    )
    version = train(settings, TrainRequest("iris", register=True, model_name=NAME)).version
    uri = f"models:/{NAME}/{version}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "MLFLOW_"))},
        "MLFLOW_TRACKING_URI": pg_tracking.uri,
        # `mlflow models serve` execs `uvicorn` through PATH: this virtualenv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "-h", "127.0.0.1"]
    cmd += ["-p", str(port), "--env-manager", "local"]
    lifecycle_env = {
        "MLFLOW_TRACKING_URI": pg_tracking.uri,
        "LIFECYCLE_MODEL_URI": uri,
        "LIFECYCLE_DATABASE_URL": app_database_url,
        "LIFECYCLE_MAX_BATCH_ROWS": str(MAX_ROWS),
        "LIFECYCLE_MAX_BODY_BYTES": str(MAX_BYTES),
    }
    ready = f"http://127.0.0.1:{port}/ping"
    with (
        start("mlflow-serve", cmd, env, ready, workdir / "logs", timeout=180) as mlflow_server,
        serve_api(lifecycle_env, workdir / "lifecycle") as api,
    ):
        ScoringServerClient("127.0.0.1", api.url.rsplit(":", 1)[1]).wait_server_ready(60)
        names = [f["name"] for f in httpx.get(f"{api.url}/model").json()["features"]]
        yield Servers(mlflow_server.url, api.url, names)


def _post(url: str, case: Case, body: bytes) -> httpx.Response:
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    return httpx.post(f"{url}/invocations", content=body, headers=headers, timeout=60)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invocations_answer_like_mlflow(servers: Servers, case: Case) -> None:
    body = case.body(servers.names)
    theirs, ours = _post(servers.mlflow, case, body), _post(servers.lifecycle, case, body)
    assert ours.status_code == (case.lifecycle or theirs.status_code), (theirs.text, ours.text)
    if case.lifecycle is not None:
        assert case.lifecycle != theirs.status_code, "documented difference no longer differs"
    answer = ours.json()  # every Lifecycle answer is JSON, a 415 and a 500 included
    if ours.status_code == 200:
        if case.lifecycle is None:
            assert answer == theirs.json()
        assert list(answer) == ["predictions"]
        return
    assert {"error_code", "message"} <= set(answer)
    if theirs.headers["content-type"].startswith("application/json") and theirs.is_error:
        expected = theirs.json()
        assert set(answer) == set(expected) - _MLFLOW_ONLY_KEYS
        assert answer["error_code"] == expected["error_code"], (expected, answer)


def test_ping_and_version_answer_like_mlflow(servers: Servers) -> None:
    for path in ("/ping", "/version"):
        theirs = httpx.get(f"{servers.mlflow}{path}")
        ours = httpx.get(f"{servers.lifecycle}{path}")
        assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content)
        assert ours.headers["content-type"] == theirs.headers["content-type"]
    assert httpx.get(f"{servers.lifecycle}/version").text == VERSION


def test_mlflow_scoring_client_drives_lifecycle(servers: Servers) -> None:
    port = servers.lifecycle.rsplit(":", 1)[1]
    client = ScoringServerClient("127.0.0.1", port)
    client.wait_server_ready(timeout=10)
    client.ping()
    assert client.get_version() == VERSION
    frame = pd.DataFrame([ROW, [ROW2[0], np.nan, *ROW2[2:]]], columns=servers.names)
    ours = client.invoke(frame).get_predictions()
    theirs = ScoringServerClient("127.0.0.1", servers.mlflow.rsplit(":", 1)[1]).invoke(frame)
    assert ours.equals(theirs.get_predictions())
    assert len(ours) == 2


def test_errors_outside_invocations_keep_lifecycles_shape(servers: Servers) -> None:
    response = httpx.post(f"{servers.lifecycle}/predict", json={"features": [1, 2]})
    assert response.status_code == 422
    assert list(response.json()) == ["detail"]


def test_predict_scores_a_missing_value_and_no_endpoint_500s_on_a_lone_surrogate(
    servers: Servers,
) -> None:
    scored = httpx.post(f"{servers.lifecycle}/predict", json={"features": [*ROW[:3], None]})
    assert scored.status_code == 200, scored.text
    for path in ("/predict", "/invocations", "/feedback", "/predict/async", "/batch"):
        for body in (b'{"\\ud800": 1}', b'{"request_id": "\\udc00", "label": "\\ud800x"}'):
            response = httpx.post(
                f"{servers.lifecycle}{path}",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code < 500, (path, body, response.text)
            response.json()

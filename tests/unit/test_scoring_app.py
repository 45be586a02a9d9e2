"""The app without a model or secrets, over real HTTP: it refuses clearly, never crashes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from mlflow.tracking import MlflowClient

from lifecycle.core.settings import Settings
from serving.api.app import create_app
from serving.runtime import MlflowRegistryProbe, ModelHolder, ModelTarget
from tests.support.services import free_port


@pytest.fixture(scope="module")
def bare() -> Iterator[tuple[str, ModelHolder]]:
    # Port 9 (discard) on localhost refuses connections: an unreachable registry, probed with
    # the fail-fast HTTP settings a serving process runs with (serving.runtime.probe).
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    client = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
    holder = ModelHolder(ModelTarget("iris", stage="Production"), MlflowRegistryProbe(client))
    app = create_app(Settings(admin_token=None, webhook_secret=None), holder)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", holder
    server.should_exit = True
    thread.join(10)
    patch.undo()


@pytest.mark.parametrize("path", ["/reload_model", "/reports"])
def test_admin_endpoints_refuse_when_no_token_is_configured(
    bare: tuple[str, ModelHolder], path: str
) -> None:
    url, _ = bare
    response = httpx.post(f"{url}{path}", json={}, headers={"Authorization": "Bearer guess"})
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "admin endpoints are disabled: set LIFECYCLE_ADMIN_TOKEN to enable them"
    )


def test_webhooks_refuse_when_no_secret_is_configured(bare: tuple[str, ModelHolder]) -> None:
    url, _ = bare
    response = httpx.post(f"{url}/webhooks/mlflow", json={"entity": "model_version_alias"})
    assert response.status_code == 403
    assert "LIFECYCLE_WEBHOOK_SECRET" in response.json()["detail"]


def test_without_a_model_scoring_is_503_and_ready_says_degraded(
    bare: tuple[str, ModelHolder],
) -> None:
    url, holder = bare
    assert holder.reconcile().action == "degraded"
    assert httpx.get(f"{url}/health").status_code == 200
    ready = httpx.get(f"{url}/ready")
    assert ready.status_code == 503
    assert ready.json()["details"]["registry"] == "degraded"
    response = httpx.post(f"{url}/predict", json={"features": [1, 2, 3, 4]})
    assert response.status_code == 503
    assert "models:/iris/Production" in response.json()["detail"]
    assert response.headers["x-request-id"]

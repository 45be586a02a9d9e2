"""`lifecycle up`: the whole embedded stack on one machine, no servers installed, no RabbitMQ.

One `up` for the module (it trains a model on first start), checked as a user meets it: the
printed URLs answer, REST and async scoring serve the bootstrapped Production model, and
Ctrl-C (SIGTERM here) stops every child.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.support.services import free_port
from tests.support.up import lifecycle_up
from tests.support.worker import wait_task

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def test_up_serves_rest_and_async_then_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # lifecycle_up's environment carries no LIFECYCLE_BROKER_URL: the default is embedded.
    # `up` refuses a taken port, so the worker's metrics port is a free one too.
    # A short report schedule, so the scheduled report shows within the test.
    env = {"LIFECYCLE_WORKER_METRICS_PORT": str(free_port()), "LIFECYCLE_REPORT_INTERVAL": "3"}
    with lifecycle_up(home, **env) as up:
        mlflow_url = up.urls["MLflow UI and registry"]
        api = up.urls["scoring API"]
        assert "broker sqla+sqlite:///" in up.text()
        assert httpx.get(f"{mlflow_url}/health", timeout=5).status_code == 200
        client = MlflowClient(mlflow_url)
        (found,) = client.search_model_versions("name = 'iris-classifier'")
        version = client.get_model_version("iris-classifier", found.version)
        assert (version.version, version.current_stage) == ("1", "Production")
        assert version.aliases == ["production"]
        assert (home / "mlflow.db").is_file()

        with httpx.Client(base_url=api, timeout=30) as http:
            # No wait: `up` prints its URLs only once the API has a model loaded.
            answer = http.post("/predict", json={"features": IRIS_ROW})
            assert answer.status_code == 200, answer.text
            assert answer.json()["label"] == "setosa"
            assert answer.json()["model"]["version"] == "1"

            started = time.monotonic()
            response = http.post("/predict/async", json={"features": IRIS_ROW})
            assert response.status_code == 202, response.text
            done = wait_task(http, response.headers["location"].rsplit("/", 1)[1], timeout=90)
            assert done["result"]["label"] == "setosa"
            assert done["result"]["model"]["version"] == "1"
            assert time.monotonic() - started < 90

            # The report schedule `up` runs: once the window holds enough predictions, a
            # report is indexed and served by the API.
            assert up.urls["drift reports"] == f"{api}/reports"
            rows = [[5.1 + i % 7 / 10, 3.5, 1.4 + i % 5 / 10, 0.2] for i in range(40)]
            assert http.post("/predict", json={"instances": rows}).status_code == 200
            deadline = time.monotonic() + 120
            while (latest := http.get("/reports/latest")).status_code == 404:
                assert time.monotonic() < deadline, up.text()
                time.sleep(1)
            assert latest.status_code == 200, latest.text
            assert latest.json()["model_name"] == "iris-classifier"
            assert latest.json()["rows"] >= 30
        assert (home / "broker.db").is_file()
    assert up.process.returncode == 0, up.text()
    assert "stopping" in up.text()
    for url in (f"{mlflow_url}/health", f"{api}/health"):
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=2)

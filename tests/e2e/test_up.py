"""`lifecycle up`: the whole embedded stack on one machine, no servers installed, no RabbitMQ.

The e2e package's one `up` (tests/e2e/conftest.py; it trains a model on first start), checked
as a user meets it: the printed URLs answer (the UI among them), REST and async scoring serve
the bootstrapped Production model, and Ctrl-C (SIGTERM here) stops every child: that test is
the last to use it.
"""

from __future__ import annotations

import time

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.support.up import UpProcess
from tests.support.worker import wait_task

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def test_up_serves_rest_and_async_and_runs_reports(shared_up: UpProcess) -> None:
    up, home = shared_up, shared_up.data_dir
    # lifecycle_up's environment carries no LIFECYCLE_BROKER_URL: the default is embedded.
    mlflow_url = up.urls["MLflow UI and registry"]
    api = up.urls["scoring API"]
    ui = up.urls["Lifecycle UI"]
    assert "broker sqla+sqlite:///" in up.text()
    assert httpx.get(f"{ui}/_stcore/health", timeout=5).text == "ok"
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


def test_ctrl_c_stops_every_child(shared_up: UpProcess) -> None:
    """Last user of the package's `up`."""
    urls = shared_up.urls
    shared_up.stop()
    assert shared_up.process.returncode == 0, shared_up.text()
    assert "stopping" in shared_up.text()
    mlflow_url, api, ui = urls["MLflow UI and registry"], urls["scoring API"], urls["Lifecycle UI"]
    for url in (f"{mlflow_url}/health", f"{api}/health", f"{ui}/_stcore/health"):
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=2)

"""`lifecycle up` scores async requests on its embedded broker: no RabbitMQ anywhere."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.services import free_port, wait_http
from tests.support.up import lifecycle_up
from tests.support.worker import wait_task


def test_up_scores_async_requests_without_rabbitmq(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # lifecycle_up's environment carries no LIFECYCLE_BROKER_URL: the default is embedded.
    with lifecycle_up(home, LIFECYCLE_API_PORT=str(free_port())) as up:
        assert "broker sqla+sqlite:///" in up.text()
        api = up.urls["scoring API"]
        wait_http(f"{api}/ready", 120)
        with httpx.Client(base_url=api, timeout=30) as client:
            started = time.monotonic()
            response = client.post("/predict/async", json={"features": [5.1, 3.5, 1.4, 0.2]})
            assert response.status_code == 202, response.text
            done = wait_task(client, response.headers["location"].rsplit("/", 1)[1], timeout=90)
            assert done["result"]["label"] == "setosa"
            assert done["result"]["model"] == {**done["result"]["model"], "version": "1"}
            assert time.monotonic() - started < 90
        assert (home / "broker.db").is_file()
    assert up.process.returncode == 0, up.text()

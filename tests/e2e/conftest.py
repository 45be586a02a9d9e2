"""One `lifecycle up` for the e2e modules (it trains and registers a first model: most of a
minute; Airflow starts beside it), shared in file order: the browser test (test_ui_browser.py)
drives its UI, then test_up.py checks its URLs, scoring and Airflow's DAGs, and stops it last."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import free_port
from tests.support.up import UpProcess, lifecycle_up


@pytest.fixture(scope="package")
def shared_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    home = tmp_path_factory.mktemp("up") / "home"
    with lifecycle_up(
        home,
        # `up` refuses a taken port, so the worker's metrics port is a free one too.
        LIFECYCLE_WORKER_METRICS_PORT=str(free_port()),
    ) as up:
        yield up

"""Session-wide real services: one MLflow tracking server on a fresh PostgreSQL database."""

from __future__ import annotations

import os

# MLflow's telemetry thread sets and unsets an environment variable while test code copies
# os.environ for a subprocess (a KeyError mid-copy), and this machine has no internet to send
# it to. Set before MLflow is imported.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest

from lifecycle.core.settings import PROJECT_ROOT, Settings
from tests.support.services import TrackingServer, temp_database, tracking_server


@pytest.fixture(scope="session")
def pg_tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """MLflow on the real PostgreSQL, started with `lifecycle tracking`."""
    workdir = tmp_path_factory.mktemp("tracking")
    with temp_database("lc_mlflow") as url, tracking_server(url, workdir) as server:
        yield server


@pytest.fixture(scope="session")
def app_database_url() -> Iterator[str]:
    """The application database (prediction store, Optuna studies, locks) on PostgreSQL."""
    with temp_database("lc_app") as url:
        yield url


@pytest.fixture
def settings(pg_tracking: TrackingServer, app_database_url: str, tmp_path: Path) -> Settings:
    # In-process MLflow calls (get_model_info, load_model) in tests must hit the same server.
    mlflow.set_tracking_uri(pg_tracking.uri)
    mlflow.set_registry_uri(pg_tracking.uri)
    return Settings(
        tracking_uri=pg_tracking.uri,
        database_url=app_database_url,
        data_dir=tmp_path / "data",
        conf_dir=PROJECT_ROOT / "conf",
        experiment_name=f"test-{tmp_path.name}",
    )


# Modules that share a package-scoped fixture run on one xdist worker, in file order: the e2e
# modules share one `lifecycle up`, which test_up.py stops last.
_SHARED_GROUPS = {"tests/e2e/test_ui_browser.py": "e2e-up", "tests/e2e/test_up.py": "e2e-up"}


def work_unit(nodeid: str) -> str:
    """What one xdist worker runs from start to end: a module, or a group of modules."""
    path = nodeid.split("::", 1)[0]
    return _SHARED_GROUPS.get(path, path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `pytest -n` (the Makefile's), every module is one unit of work, so a module's
    stack is started once, never on both workers. Units go out in file order (the e2e and
    integration modules, the slowest, first) as workers free up."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False
    return ModuleScheduling(config, log)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line saying what was skipped and why: a skip must never pass for a green run."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        # The first line names the cause; driver errors add lines of background.
        reasons[reason.removeprefix("Skipped: ").strip().splitlines()[0]] += 1
    if reasons:
        parts = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common())
        terminalreporter.write_line(f"skipped {sum(reasons.values())} tests: {parts}")

"""Fixtures the integration modules share.

`stack` is a module's own scoring stack: for modules that promote, roll back, kill or restart
its processes, or count every row of its model. `shared_stack` is one stack for the whole
session, for modules that only add traffic and read back what they sent (by request id or
time), so its setup (training, API, worker: 20-30 s) is paid once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import TrackingServer
from tests.support.stack import Stack, scoring_stack


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    pg_tracking: TrackingServer,
    app_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A scoring stack of the module's own (API, worker, vhost, iris v1 in Production)."""
    workdir = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with scoring_stack(pg_tracking, app_database_url, workdir) as s:
        yield s


@pytest.fixture(scope="session")
def shared_stack(
    pg_tracking: TrackingServer, app_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One scoring stack for every module that never changes its state (no promotion, reload
    of another version, restart, or settings of its own) and reads back only its own rows."""
    with scoring_stack(pg_tracking, app_database_url, tmp_path_factory.mktemp("shared")) as s:
        yield s

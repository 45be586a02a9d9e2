"""Fixtures the integration modules share."""

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

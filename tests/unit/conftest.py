"""Databases for the prediction-store tests: a fresh PostgreSQL database per test, or either
engine the store runs on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import temp_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the test PostgreSQL, dropped afterwards."""
    with temp_database("lc_store") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test once on SQLite and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        with temp_database("lc_store") as url:
            yield url

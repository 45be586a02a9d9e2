"""`lifecycle prune --older-than DURATION`: retention of the prediction log by hand, the same
pruning the `prediction_retention` setting applies hourly (lifecycle/core/store/prune.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from lifecycle.core.durations import parse_duration
from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from lifecycle.core.store.database import PredictionDatabase


class PruneBusy(LifecycleError):
    """Another process holds the retention lock."""

    status_code = 409


def run_prune(settings: Settings, older_than: str, echo: Callable[[str], None]) -> None:
    """Remove predictions older than `older_than` and print what went."""
    age = parse_duration(older_than, "--older-than")
    if settings.database_url is None:
        # The embedded SQLite file lives in data_dir, which may not exist yet.
        settings.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    db = PredictionDatabase(settings.resolved_database_url(), on_rejected=lambda _: None)
    try:
        result = db.prune(datetime.now(UTC) - age)
    finally:
        db.dispose()
    if result.skipped:
        raise PruneBusy("another process is pruning the prediction log now; try again later")
    for line in result.describe():
        echo(line)

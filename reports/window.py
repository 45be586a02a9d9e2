"""What a report covers: one model's predictions, all versions or one, the last N or since a
time, compared with one version's training rows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lifecycle.core.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class ReportRequest:
    """A report to make. `model_name` None: the configured model. `version` None: every
    version in the window, compared with the version of its newest prediction. With neither
    `last` nor `since`, the window is the last `report_last` predictions; with both, the
    last N of those since that time."""

    model_name: str | None = None
    version: str | None = None
    last: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def describe(self) -> dict[str, Any]:
        """What was asked, as the report's tags and index row record it."""
        return {
            "version": self.version,
            "last": self.last,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A duration back from now (`90s`, `30m`, `2h`, `7d`, `1w`) or an ISO 8601 time
    (UTC when it names no zone)."""
    value = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", value)
    if match:
        amount, unit = match.groups()
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=float(amount) * _UNITS[unit])
        except OverflowError:
            raise ConfigError(f"since: '{text}' reaches before year 1") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"since: '{text}' is neither a duration (90s, 30m, 2h, 7d, 1w) nor an ISO 8601 time"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment

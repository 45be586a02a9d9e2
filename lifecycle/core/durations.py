"""Durations written the way settings and CLI options take them: 30d, 12h, 90m, 45s, 2w."""

from __future__ import annotations

import re
from datetime import timedelta

from lifecycle.core.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, field_name: str) -> timedelta:
    """A positive duration written like 30d, 12h, 90m, 45s or 2w; else a ConfigError naming
    the field."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{field_name}: {text!r} is not a duration like 30d, 12h, 90m, 45s or 2w")
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds <= 0:
        raise ConfigError(f"{field_name}: {text!r} must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ConfigError(f"{field_name}: {text!r} is too long") from None

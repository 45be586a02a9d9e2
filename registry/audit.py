"""The audit entry each registry action writes as tags on the model version it acts on.

Tags live on the version itself, so the MLflow UI and any other client see who promoted what,
when, why and on which numbers, without a separate store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PREFIX = "lifecycle."
PROMOTED_AT = f"{PREFIX}promoted_at"
PROMOTED_BY = f"{PREFIX}promoted_by"
REASON = f"{PREFIX}reason"
PREVIOUS_VERSION = f"{PREFIX}previous_version"
FORCED = f"{PREFIX}forced"
GATES = f"{PREFIX}gates"
ACTION = f"{PREFIX}action"
STAGE = f"{PREFIX}stage"


@dataclass(frozen=True)
class AuditEntry:
    action: str
    stage: str
    promoted_at: str
    promoted_by: str
    reason: str
    previous_version: str | None
    forced: bool
    gates: Sequence[Mapping[str, Any]]

    def to_tags(self) -> dict[str, str]:
        return {
            ACTION: self.action,
            STAGE: self.stage,
            PROMOTED_AT: self.promoted_at,
            PROMOTED_BY: self.promoted_by,
            REASON: self.reason,
            # An empty value would read as "unknown"; "none" says there was no predecessor.
            PREVIOUS_VERSION: self.previous_version or "none",
            FORCED: "true" if self.forced else "false",
            GATES: json.dumps(list(self.gates), sort_keys=True, default=str),
        }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def previous_version(tags: Mapping[str, str]) -> str | None:
    """The version this one replaced, when a Lifecycle action recorded it."""
    value = tags.get(PREVIOUS_VERSION, "").strip()
    return value if value.isdigit() else None


def gates_from_tags(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    try:
        value = json.loads(tags.get(GATES, "[]"))
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []

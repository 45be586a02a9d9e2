"""Registry stages: the four MLflow knows, accepted in any letter case."""

from __future__ import annotations

from typing import get_args

from lifecycle.core.config import Stage
from lifecycle.core.errors import ConfigError

STAGES: tuple[Stage, ...] = get_args(Stage)
PRODUCTION: Stage = "Production"
STAGING: Stage = "Staging"
ARCHIVED: Stage = "Archived"
# Stages a promotion into is gated and leaves exactly one version in.
GATED: tuple[Stage, ...] = (PRODUCTION, STAGING)


def normalize_stage(value: str) -> Stage:
    for stage in STAGES:
        if value.strip().lower() == stage.lower():
            return stage
    raise ConfigError(f"invalid stage '{value}'; expected one of {', '.join(STAGES)}")

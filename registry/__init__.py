"""The Model Registry side of Lifecycle: gated promotion, rollback and listing.

The CLI, the REST API (which the UI calls) and the pipelines all go through these functions,
so every promotion runs the same gates, takes the same lock and leaves the same audit trail.
"""

from registry.gates import GateResult, PromotionRefused
from registry.listing import VersionRow, list_versions
from registry.promotion import (
    GateCheck,
    NothingToRollBack,
    PromotionResult,
    check_gates,
    promote,
    rollback,
    sync_aliases,
)
from registry.stages import STAGES, normalize_stage

__all__ = [
    "STAGES",
    "GateCheck",
    "GateResult",
    "NothingToRollBack",
    "PromotionRefused",
    "PromotionResult",
    "VersionRow",
    "check_gates",
    "list_versions",
    "normalize_stage",
    "promote",
    "rollback",
    "sync_aliases",
]

"""Promote and roll back: gates, stage transition, alias and audit tags, under one lock.

Stages and aliases may also be changed outside Lifecycle (MLflow UI, other clients), so
nothing here trusts earlier Lifecycle actions: the registry is re-read inside the lock and
the aliases are reconciled with whatever the stages are after the transition.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from lifecycle.core import mlflow_gateway
from lifecycle.core.config import GatesConfig, Stage, load_gates
from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from registry import audit
from registry.gates import GateResult, PromotionRefused, enforce, run_gates
from registry.lock import promotion_lock
from registry.stages import ARCHIVED, GATED, PRODUCTION, normalize_stage


class NothingToRollBack(LifecycleError):
    """There is no Production version, or no earlier one to return to."""

    status_code = 409


@dataclass(frozen=True)
class PromotionResult:
    name: str
    version: str
    stage: Stage
    action: str
    previous_version: str | None
    forced: bool
    gates: list[GateResult]
    alias: str | None
    changed: bool
    promoted_at: str | None


@dataclass(frozen=True)
class _Context:
    settings: Settings
    client: MlflowClient
    config: GatesConfig


def promote(
    settings: Settings,
    name: str,
    version: str | int,
    stage: str = PRODUCTION,
    reason: str | None = None,
    force: bool = False,
) -> PromotionResult:
    """Gate `name` v`version` and move it to `stage`, keeping the stage's alias on it.

    Raises PromotionRefused (a GateFailed) with every gate's numbers when a gate refuses.
    """
    target = normalize_stage(stage)
    config = load_gates(settings.conf_dir)
    client = mlflow_gateway.connect(settings)
    mlflow_gateway.get_version(client, name, version)
    ctx = _Context(settings, client, config)
    with promotion_lock(settings, name, config.lock_timeout):
        action = "promote" if target in GATED else "demote"
        return _apply(ctx, name, str(version), target, reason or "", force, action)


@dataclass(frozen=True)
class GateCheck:
    """What `promote` would decide now, without the lock and without changing anything."""

    name: str
    version: str
    stage: Stage
    gates: list[GateResult]

    @property
    def passed(self) -> bool:
        return not any(r.blocking for r in self.gates)


def check_gates(
    settings: Settings, name: str, version: str | int, stage: str = PRODUCTION
) -> GateCheck:
    """The gates `promote(settings, name, version, stage)` would run, evaluated now.

    No lock is taken: the answer is advice, and a promotion re-reads the registry and runs
    the gates again under the lock. A stage that is not gated runs no gates.
    """
    target = normalize_stage(stage)
    config = load_gates(settings.conf_dir)
    client = mlflow_gateway.connect(settings)
    candidate = mlflow_gateway.get_version(client, name, version)
    ctx = _Context(settings, client, config)
    gates = _gates(ctx, name, candidate, skip_quality=False) if target in GATED else []
    return GateCheck(name, str(version), target, gates)


def rollback(settings: Settings, name: str, reason: str | None = None) -> PromotionResult:
    """Return Production to the version the current one replaced.

    The target is the current Production version's `previous_version` audit tag; when that is
    absent (the stage was set outside Lifecycle) it is the most recently archived version.
    Gates (b) signature and (c) loads still apply; (a) and (d) are recorded, not enforced.
    """
    config = load_gates(settings.conf_dir)
    client = mlflow_gateway.connect(settings)
    ctx = _Context(settings, client, config)
    with promotion_lock(settings, name, config.lock_timeout):
        current = _newest(mlflow_gateway.versions_in_stage(client, name, PRODUCTION))
        if current is None:
            raise NothingToRollBack(f"model {name} has no Production version to roll back")
        target = _rollback_target(client, name, current)
        why = reason or f"rollback from version {current.version}"
        return _apply(ctx, name, target, PRODUCTION, why, False, "rollback")


def _rollback_target(client: MlflowClient, name: str, current: ModelVersion) -> str:
    versions = {v.version: v for v in mlflow_gateway.search_versions(client, name)}
    tagged = audit.previous_version(current.tags or {})
    if tagged is not None and tagged in versions and tagged != current.version:
        return tagged
    archived = [v for v in versions.values() if v.current_stage == ARCHIVED]
    if not archived:
        raise NothingToRollBack(
            f"model {name} v{current.version} records no previous version and none is Archived"
        )
    latest = max(archived, key=lambda v: (v.last_updated_timestamp or 0, int(v.version)))
    return str(latest.version)


def _apply(
    ctx: _Context,
    name: str,
    version: str,
    stage: Stage,
    reason: str,
    force: bool,
    action: str,
) -> PromotionResult:
    client = ctx.client
    candidate = mlflow_gateway.get_version(client, name, version)
    incumbents = [
        v for v in mlflow_gateway.versions_in_stage(client, name, stage) if v.version != version
    ]
    previous = _newest(incumbents) if stage in GATED else None
    previous_version = str(previous.version) if previous is not None else None
    alias = ctx.config.aliases.get(stage)
    if candidate.current_stage == stage and (stage not in GATED or not incumbents):
        sync_aliases(client, name, ctx.config)
        return PromotionResult(name, version, stage, action, None, False, [], alias, False, None)

    results: list[GateResult] = []
    if stage in GATED:
        results = _gates(ctx, name, candidate, skip_quality=force or action == "rollback")
        blocking = [r for r in results if r.blocking]
        if blocking:
            summary = "; ".join(f"{r.name}: {r.detail}" for r in blocking)
            raise PromotionRefused(f"{name} v{version} not promoted to {stage}: {summary}", results)

    with _stages_api():
        client.transition_model_version_stage(
            name, version, stage, archive_existing_versions=stage in GATED
        )
        if stage in GATED:
            _archive_stragglers(client, name, stage, version)
    sync_aliases(client, name, ctx.config)

    entry = audit.AuditEntry(
        action=action,
        stage=stage,
        promoted_at=audit.now_iso(),
        promoted_by=ctx.settings.actor or "unknown",
        reason=reason,
        previous_version=previous_version,
        forced=force,
        gates=[r.to_dict() for r in results],
    )
    for key, value in entry.to_tags().items():
        client.set_model_version_tag(name, version, key, value)
    return PromotionResult(
        name,
        version,
        stage,
        action,
        previous_version,
        entry.forced,
        results,
        alias,
        True,
        entry.promoted_at,
    )


def _gates(
    ctx: _Context, name: str, candidate: ModelVersion, skip_quality: bool
) -> list[GateResult]:
    """The gates a move of `candidate` into a gated stage runs, against Production."""
    production = _newest(
        [
            v
            for v in mlflow_gateway.versions_in_stage(ctx.client, name, PRODUCTION)
            if v.version != candidate.version
        ]
    )
    return enforce(run_gates(ctx.config, name, candidate, production), skip_quality=skip_quality)


def _archive_stragglers(client: MlflowClient, name: str, stage: Stage, keep: str) -> None:
    """A transition made outside Lifecycle may race ours: leave exactly one version in stage."""
    for v in mlflow_gateway.versions_in_stage(client, name, stage):
        if v.version != keep:
            client.transition_model_version_stage(name, v.version, ARCHIVED)


def sync_aliases(client: MlflowClient, name: str, config: GatesConfig) -> None:
    """Point each configured stage alias at the version in that stage, or remove it."""
    versions = mlflow_gateway.search_versions(client, name)
    holders = dict(client.get_registered_model(name).aliases or {})
    for stage, alias in config.aliases.items():
        target = _newest([v for v in versions if v.current_stage == stage])
        holder = holders.get(alias)
        if target is None:
            if holder is not None:
                client.delete_registered_model_alias(name, alias)
        elif str(holder) != str(target.version):
            client.set_registered_model_alias(name, alias, str(target.version))


def _newest(versions: list[ModelVersion]) -> ModelVersion | None:
    """The version most recently moved (ties: the highest number)."""
    if not versions:
        return None
    return max(versions, key=lambda v: (v.last_updated_timestamp or 0, int(v.version)))


@contextmanager
def _stages_api() -> Iterator[None]:
    # Stages are deprecated in MLflow 3 but are what users promote by; aliases ride along.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield

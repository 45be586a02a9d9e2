"""`list_versions`: what the registry holds, with each version's stage, aliases and scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lifecycle.core import mlflow_gateway
from lifecycle.core.settings import Settings
from registry import audit

KEY_METRICS = ("f1_macro", "accuracy")


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: str
    stage: str
    aliases: tuple[str, ...]
    run_id: str | None
    created: datetime
    promoted_at: str | None
    action: str | None
    forced: bool
    metrics: dict[str, float] = field(default_factory=dict)


def list_versions(settings: Settings, name: str | None = None) -> list[VersionRow]:
    """Every version of `name`, or of every registered model when no name is given."""
    client = mlflow_gateway.connect(settings)
    names = [name] if name else _model_names(client)
    rows: list[VersionRow] = []
    for model in names:
        rows.extend(_rows(client, model))
    return rows


def _model_names(client: MlflowClient) -> list[str]:
    names: list[str] = []
    token: str | None = None
    while True:
        page = client.search_registered_models(max_results=500, page_token=token)
        names.extend(m.name for m in page)
        token = page.token
        if not token:
            return sorted(names)


def _rows(client: MlflowClient, name: str) -> list[VersionRow]:
    versions = mlflow_gateway.search_versions(client, name)
    aliases: dict[str, list[str]] = {}
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for v in versions:
        tags = v.tags or {}
        rows.append(
            VersionRow(
                name=name,
                version=str(v.version),
                stage=v.current_stage or "None",
                aliases=tuple(sorted(aliases.get(str(v.version), []))),
                run_id=v.run_id or None,
                created=datetime.fromtimestamp((v.creation_timestamp or 0) / 1000, UTC),
                promoted_at=tags.get(audit.PROMOTED_AT),
                action=tags.get(audit.ACTION),
                forced=tags.get(audit.FORCED) == "true",
                metrics=_run_metrics(client, v.run_id),
            )
        )
    return rows


def _run_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException:
        # The run may have been deleted since; the version is still worth listing.
        return {}
    return {k: float(metrics[k]) for k in KEY_METRICS if k in metrics}

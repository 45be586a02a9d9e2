"""The index of drift and quality reports: one row per report, in the application database.

`reports/` writes a row after logging the report to MLflow; the API (`GET /reports`, the
drift gauges on /metrics), the UI and the pipelines list and read them here without asking
MLflow. The full report (Evidently's HTML and JSON snapshot) stays in MLflow, named by the
artifact URIs of the row.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from lifecycle.core.errors import LifecycleError
from lifecycle.core.store.tables import as_utc, make_engine

VERDICTS = ("drift", "no_drift")

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_reports = sa.Table(
    "reports",
    sa.MetaData(),
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("window", _JSON, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("sampled_rows", sa.Integer, nullable=False),
    sa.Column("reference_rows", sa.Integer, nullable=False),
    sa.Column("labelled_rows", sa.Integer, nullable=False),
    sa.Column("drift_share", sa.Float, nullable=False),
    sa.Column("drifted_features", _JSON, nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("features", _JSON, nullable=False),
    sa.Column("quality", _JSON),
    sa.Column("run_id", sa.String(64)),
    sa.Column("artifacts", _JSON, nullable=False),
    sa.Index("ix_reports_model_time", "model_name", "created_at"),
)


class ReportIndexUnavailable(LifecycleError):
    status_code = 503


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's line of a drift report: Evidently's test, its score and threshold."""

    feature: str
    kind: str
    test: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class ReportEntry:
    """One report as the index keeps it.

    `window` says what was asked (model, version or None for all, last, since, until) and
    what was found (first/last prediction time, the versions present). `quality` maps a
    version to its live figures from feedback and the held-out figures of its training run,
    or is None when no prediction in the window received feedback. `artifacts` maps a name
    (drift_html, drift_json, quality_html, quality_json) to its MLflow artifact URI.
    """

    id: str
    created_at: datetime
    model_name: str
    model_version: str
    window: dict[str, Any]
    rows: int
    sampled_rows: int
    reference_rows: int
    labelled_rows: int
    drift_share: float
    drifted_features: list[str]
    verdict: str
    features: list[FeatureDrift]
    quality: dict[str, Any] | None = None
    run_id: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["created_at"] = as_utc(self.created_at)
        return row

    @classmethod
    def from_row(cls, row: Any) -> ReportEntry:
        values = dict(row._mapping)
        values["created_at"] = as_utc(values["created_at"])
        values["features"] = [FeatureDrift(**f) for f in values["features"]]
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the same fields, the time as ISO 8601."""
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        return out


class ReportIndex:
    """Reads and writes the index. Opens no connection until first used; creates its table
    then. Any database failure raises ReportIndexUnavailable (HTTP 503, one CLI line)."""

    def __init__(self, database_url: str) -> None:
        self._engine = make_engine(database_url)
        self._created = False

    def dispose(self) -> None:
        self._engine.dispose()

    def add(self, entry: ReportEntry) -> None:
        with self._begin() as conn:
            conn.execute(_reports.insert(), entry.to_row())

    def get(self, report_id: str) -> ReportEntry | None:
        with self._begin() as conn:
            row = conn.execute(sa.select(_reports).where(_reports.c.id == report_id)).first()
        return None if row is None else ReportEntry.from_row(row)

    def list(
        self,
        *,
        model_name: str | None = None,
        version: str | None = None,
        verdict: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[ReportEntry]:
        """Newest first."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        stmt = sa.select(_reports)
        if model_name is not None:
            stmt = stmt.where(_reports.c.model_name == model_name)
        if version is not None:
            stmt = stmt.where(_reports.c.model_version == version)
        if verdict is not None:
            stmt = stmt.where(_reports.c.verdict == verdict)
        if since is not None:
            stmt = stmt.where(_reports.c.created_at >= as_utc(since))
        stmt = stmt.order_by(_reports.c.created_at.desc(), _reports.c.id.desc()).limit(limit)
        with self._begin() as conn:
            return [ReportEntry.from_row(row) for row in conn.execute(stmt)]

    def latest(self, model_name: str | None = None) -> ReportEntry | None:
        found = self.list(model_name=model_name, limit=1)
        return found[0] if found else None

    def latest_per_version(self) -> builtins.list[ReportEntry]:
        """The newest report of every (model, version) pair: what the drift gauges show."""
        newest = (
            sa.select(
                _reports.c.model_name,
                _reports.c.model_version,
                sa.func.max(_reports.c.created_at).label("created_at"),
            )
            .group_by(_reports.c.model_name, _reports.c.model_version)
            .subquery()
        )
        stmt = (
            sa.select(_reports)
            .join(
                newest,
                sa.and_(
                    _reports.c.model_name == newest.c.model_name,
                    _reports.c.model_version == newest.c.model_version,
                    _reports.c.created_at == newest.c.created_at,
                ),
            )
            .order_by(_reports.c.model_name, _reports.c.model_version)
        )
        with self._begin() as conn:
            return [ReportEntry.from_row(row) for row in conn.execute(stmt)]

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        try:
            if not self._created:
                _reports.metadata.create_all(self._engine, checkfirst=True)
                self._created = True
            with self._engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise ReportIndexUnavailable(
                f"report index unavailable ({type(exc).__name__})"
            ) from exc

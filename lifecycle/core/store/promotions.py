"""Automatic promotions: one row per candidate the retrain pipeline trained and put through
the gates, with its outcome (promoted, refused, failed) and its lineage (drift report, Airflow
run, training run, when it served, its first prediction).

The retrain DAG's tasks write the rows; the API's /metrics counts them by outcome
(`lifecycle_automatic_promotions_total`), which is what the refused-promotion alert watches.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.core.errors import LifecycleError
from lifecycle.core.store.tables import as_utc, make_engine

OUTCOMES = ("promoted", "refused", "failed")

_promotions = sa.Table(
    "automatic_promotions",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("version", sa.String(64)),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("report_id", sa.String(64)),
    sa.Column("dag_run_id", sa.String(255)),
    sa.Column("run_id", sa.String(64)),
    sa.Column("detail", sa.Text),
    sa.Column("served_at", sa.DateTime(timezone=True)),
    sa.Column("first_request_id", sa.String(255)),
    sa.Index("ix_automatic_promotions_model", "model_name", "outcome"),
)


class PromotionLogUnavailable(LifecycleError):
    status_code = 503


@dataclass(frozen=True)
class AutomaticPromotion:
    """One row. `version` is None when training failed before registering one."""

    model_name: str
    version: str | None
    stage: str
    outcome: str
    report_id: str | None = None
    dag_run_id: str | None = None
    run_id: str | None = None
    detail: str | None = None
    created_at: datetime | None = None
    served_at: datetime | None = None
    first_request_id: str | None = None
    id: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> AutomaticPromotion:
        values = dict(row._mapping)
        for key in ("created_at", "served_at"):
            if values[key] is not None:
                values[key] = as_utc(values[key])
        return cls(**values)


class PromotionLog:
    """Reads and writes the table. Opens no connection until first used; creates the table
    then. A database failure raises PromotionLogUnavailable."""

    def __init__(self, database_url: str) -> None:
        self._engine = make_engine(database_url)
        self._created = False

    def dispose(self) -> None:
        self._engine.dispose()

    def record(self, entry: AutomaticPromotion) -> AutomaticPromotion:
        """Insert `entry` (created now); returns it with its id and time."""
        if entry.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {entry.outcome!r}")
        row = asdict(entry)
        row.pop("id")
        row["created_at"] = datetime.now(UTC)
        with self._begin() as conn:
            new_id = conn.execute(_promotions.insert().values(**row)).inserted_primary_key
        return AutomaticPromotion(**{**row, "id": int(new_id[0]) if new_id else None})

    def latest(self, model_name: str, version: str) -> AutomaticPromotion | None:
        """The newest row of that version."""
        stmt = (
            sa.select(_promotions)
            .where(_promotions.c.model_name == model_name, _promotions.c.version == version)
            .order_by(_promotions.c.created_at.desc(), _promotions.c.id.desc())
            .limit(1)
        )
        with self._begin() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else AutomaticPromotion.from_row(row)

    def mark_served(self, model_name: str, version: str, at: datetime) -> bool:
        """served_at on the newest row of that version; False when it has none."""
        return self._update_latest(model_name, version, served_at=as_utc(at))

    def mark_first_prediction(self, model_name: str, version: str, request_id: str) -> bool:
        return self._update_latest(model_name, version, first_request_id=request_id)

    def counts(self) -> dict[tuple[str, str], int]:
        """(model, outcome) -> rows: one GROUP BY over the (small) table."""
        c = _promotions.c
        stmt = sa.select(c.model_name, c.outcome, sa.func.count()).group_by(c.model_name, c.outcome)
        with self._begin() as conn:
            return {(str(m), str(o)): int(n) for m, o, n in conn.execute(stmt)}

    def _update_latest(self, model_name: str, version: str, **values: Any) -> bool:
        found = self.latest(model_name, version)
        if found is None:
            return False
        with self._begin() as conn:
            conn.execute(_promotions.update().where(_promotions.c.id == found.id).values(**values))
        return True

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        try:
            if not self._created:
                _promotions.metadata.create_all(self._engine, checkfirst=True)
                self._created = True
            with self._engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise PromotionLogUnavailable(
                f"automatic promotion log unavailable ({type(exc).__name__})"
            ) from exc

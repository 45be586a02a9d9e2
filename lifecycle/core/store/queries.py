"""The read side's statements (SQLAlchemy Core, PostgreSQL and SQLite); read.py runs them.

`dialect` is the engine's dialect name; where the two databases differ the statement does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.core.store.tables import as_utc, feedback, predictions

_p, _f = predictions.c, feedback.c
_with_feedback = predictions.outerjoin(feedback, _p.request_id == _f.request_id)
_only_feedback = predictions.join(feedback, _p.request_id == _f.request_id)


def filters(
    model_name: str,
    *,
    version: str | None = None,
    source: str | None = None,
    label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses; times are compared in UTC, since inclusive and until exclusive."""
    where = [_p.model_name == model_name]
    if version is not None:
        where.append(_p.model_version == version)
    if source is not None:
        where.append(_p.source == source)
    if label is not None:
        where.append(_p.label == label)
    # SQLite stores UTC wall-clock text and drops tzinfo on binding: convert before binding.
    if since is not None:
        where.append(_p.created_at >= as_utc(since))
    if until is not None:
        where.append(_p.created_at < as_utc(until))
    return where


def _newest_first(stmt: sa.Select[Any], last: int | None) -> sa.Select[Any]:
    """All rows oldest first, or the `last` newest ones newest first (the caller reverses)."""
    if last is None:
        return stmt.order_by(_p.created_at, _p.request_id)
    return stmt.order_by(_p.created_at.desc(), _p.request_id.desc()).limit(last)


# Values the driver or SQLAlchemy would decode row by row (about half the time of a large
# window) are read as text and decoded by frames.py for the whole column at once.


def _created_at(dialect: str) -> sa.ColumnElement[Any]:
    if dialect == "sqlite":
        return sa.type_coerce(_p.created_at, sa.String).label("created_at")  # the UTC text
    return _p.created_at


def _prediction(dialect: str) -> sa.ColumnElement[Any]:
    if dialect == "sqlite":
        # Raw: the column's numeric affinity keeps numbers as numbers (a CAST to text would
        # keep only 15 digits), the rest as JSON text.
        return sa.type_coerce(_p.prediction, sa.String).label("prediction")
    return sa.cast(_p.prediction, sa.Text).label("prediction")  # jsonb as JSON text


_features = sa.cast(_p.features, sa.Text).label("features")


def window(dialect: str, where: list[sa.ColumnElement[bool]], last: int | None) -> sa.Select[Any]:
    """frames.WINDOW_COLUMNS, then the features JSON text."""
    stmt = sa.select(
        _p.request_id,
        _created_at(dialect),
        _p.source,
        _p.model_version,
        _p.run_id,
        _prediction(dialect),
        _p.label,
        _p.latency_ms,
        _f.label.label("feedback"),
        _features,
    ).select_from(_with_feedback)
    return _newest_first(stmt.where(*where), last)


def count(where: list[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    return sa.select(sa.func.count()).select_from(predictions).where(*where)


def nth_newest(where: list[sa.ColumnElement[bool]], n: int) -> sa.Select[Any]:
    """created_at of the n-th newest row (n >= 1): where a `last n` window starts."""
    return (
        sa.select(_p.created_at)
        .where(*where)
        .order_by(_p.created_at.desc(), _p.request_id.desc())
        .offset(n - 1)
        .limit(1)
    )


def sampled(dialect: str, fraction: float) -> sa.ColumnElement[bool]:
    """True for about `fraction` of the rows, drawn independently per row by the database."""
    if dialect == "postgresql":
        return sa.func.random() < fraction
    # SQLite's random() is a signed 64-bit integer.
    scale = 1 << 30
    return sa.func.abs(sa.func.random() % scale) < int(fraction * scale)


def labelled(dialect: str, where: list[sa.ColumnElement[bool]], last: int | None) -> sa.Select[Any]:
    """frames.LABELLED_COLUMNS, then the features JSON text; only rows with feedback."""
    stmt = sa.select(
        _p.request_id,
        _created_at(dialect),
        _p.model_version,
        _p.label,
        _f.label.label("actual"),
        _features,
    ).select_from(_only_feedback)
    return _newest_first(stmt.where(*where), last)


def page(
    where: list[sa.ColumnElement[bool]], limit: int, before: tuple[datetime, str] | None
) -> sa.Select[Any]:
    """Every column and the feedback label, newest first, below the keyset cursor."""
    if before is not None:
        at, request_id = as_utc(before[0]), before[1]
        # The plain `<=` bounds the index range; the OR breaks ties on the request id.
        where = [
            *where,
            _p.created_at <= at,
            sa.or_(_p.created_at < at, sa.and_(_p.created_at == at, _p.request_id < request_id)),
        ]
    return (
        sa.select(predictions, _f.label.label("feedback"))
        .select_from(_with_feedback)
        .where(*where)
        .order_by(_p.created_at.desc(), _p.request_id.desc())
        .limit(limit)
    )


def volume(
    dialect: str, where: list[sa.ColumnElement[bool]], bucket_seconds: int
) -> sa.Select[Any]:
    """(bucket number since the epoch, version, count)."""
    bucket: sa.ColumnElement[Any]
    if dialect == "postgresql":
        epoch = sa.extract("epoch", _p.created_at)
        bucket = sa.cast(sa.func.floor(epoch / bucket_seconds), sa.BigInteger)
    else:  # SQLite keeps UTC text: strftime('%s') reads it as UTC, in whole seconds
        seconds = sa.cast(sa.func.strftime("%s", _p.created_at), sa.BigInteger)
        bucket = seconds // bucket_seconds
    # Bucket in a subquery, group outside it: one expression, whatever the parameters.
    inner = sa.select(bucket.label("bucket"), _p.model_version).where(*where).subquery()
    return (
        sa.select(inner.c.bucket, inner.c.model_version, sa.func.count())
        .group_by(inner.c.bucket, inner.c.model_version)
        .order_by(inner.c.bucket, inner.c.model_version)
    )


def class_counts(where: list[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """(version, predicted label, count)."""
    return (
        sa.select(_p.model_version, _p.label, sa.func.count())
        .where(*where)
        .group_by(_p.model_version, _p.label)
        .order_by(_p.model_version, _p.label)
    )


def quality(where: list[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """(version, n, correct) over labelled predictions with feedback, as feedback_counts."""
    correct = sa.func.sum(sa.case((_p.label == _f.label, 1), else_=0))
    return (
        sa.select(_p.model_version, sa.func.count(), correct)
        .select_from(_only_feedback)
        .where(*where, _p.label.is_not(None))
        .group_by(_p.model_version)
        .order_by(_p.model_version)
    )


def latency_percentiles(
    dialect: str, where: list[sa.ColumnElement[bool]], percentiles: Sequence[float]
) -> sa.Select[Any]:
    """PostgreSQL: (version, n, *percentile_cont). SQLite, which has no percentile function:
    (version, latency) ordered by both, for frames.interpolated."""
    if dialect == "postgresql":
        return (
            sa.select(
                _p.model_version,
                sa.func.count(),
                *(sa.func.percentile_cont(q).within_group(_p.latency_ms) for q in percentiles),
            )
            .where(*where)
            .group_by(_p.model_version)
            .order_by(_p.model_version)
        )
    return (
        sa.select(_p.model_version, _p.latency_ms)
        .where(*where)
        .order_by(_p.model_version, _p.latency_ms)
    )

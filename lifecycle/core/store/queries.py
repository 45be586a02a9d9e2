"""The read side's statements (SQLAlchemy Core, PostgreSQL and SQLite); read.py runs them.

`dialect` is the engine's dialect name; where the two databases differ the statement does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import visitors

from lifecycle.core.store.histogram import HIGHEST_MS, LN_GAMMA, LOWEST_MS
from lifecycle.core.store.tables import (
    as_utc,
    feedback,
    prediction_chunk_values,
    prediction_values,
    predictions,
)

_p, _f = prediction_values.c, feedback.c
_with_feedback = prediction_values.outerjoin(feedback, _p.request_id == _f.request_id)
_only_feedback = prediction_values.join(feedback, _p.request_id == _f.request_id)


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


_NEWEST = (_p.created_at.desc(), _p.request_id.desc())


def _newest_first(stmt: sa.Select[Any], last: int | None) -> sa.Select[Any]:
    """All rows oldest first, or the `last` newest ones newest first (the caller reverses)."""
    if last is None:
        return stmt.order_by(_p.created_at, _p.request_id)
    return stmt.order_by(*_NEWEST).limit(last)


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


def _names(dialect: str) -> sa.ColumnElement[Any]:
    """A chunk row's feature names, whose features are a JSON array in their order (null for
    other rows), as JSON text: one string per row that frames.py decodes once per distinct
    value, where the driver would build a list of strings per row."""
    if dialect == "postgresql":
        return sa.cast(sa.func.array_to_json(_p.feature_names), sa.Text).label("feature_names")
    return _p.feature_names.label("feature_names")


def window(dialect: str, where: list[sa.ColumnElement[bool]], last: int | None) -> sa.Select[Any]:
    """frames.WINDOW_COLUMNS, then the features JSON text and the feature names."""
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
        _names(dialect),
    ).select_from(_with_feedback)
    stmt = _newest_first(stmt.where(*where), last)
    return _each_table(dialect, stmt, list(_NEWEST), last)


def count(where: list[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    return sa.select(sa.func.count()).select_from(prediction_values).where(*where)


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
    """frames.LABELLED_COLUMNS, then the features JSON text and the feature names; only rows
    with feedback."""
    stmt = sa.select(
        _p.request_id,
        _created_at(dialect),
        _p.model_version,
        _p.label,
        _f.label.label("actual"),
        _features,
        _names(dialect),
    ).select_from(_only_feedback)
    stmt = _newest_first(stmt.where(*where), last)
    return _each_table(dialect, stmt, list(_NEWEST), last)


def page(
    where: list[sa.ColumnElement[bool]],
    limit: int,
    before: tuple[datetime, str] | None,
    version: str | None = None,
    dialect: str = "sqlite",
) -> sa.Select[Any]:
    """Every column and the feedback label, newest first, below the keyset cursor; `version`
    is a filter like those in `where`, kept apart for the index it needs."""
    order = [_p.created_at.desc(), _p.request_id.desc()]
    if version is not None:
        # With `model_version = v` the planner may walk any time index newest first and skip
        # other versions' rows, expecting versions spread evenly in time. They are not: each
        # version serves its own period, so a page of an old version walked every newer row
        # (170 ms at 1M rows, growing with the table). As a range, and first in ORDER BY, only
        # ix_predictions_model_version_time gives the order: the scan starts at the version's
        # newest row. Same rows: `>= v AND <= v` is `= v` under a deterministic collation.
        where = [*where, _p.model_version >= version, _p.model_version <= version]
        order = [_p.model_version.desc(), *order]
    if before is not None:
        at, request_id = as_utc(before[0]), before[1]
        # The plain `<=` bounds the index range; the OR breaks ties on the request id.
        where = [
            *where,
            _p.created_at <= at,
            sa.or_(_p.created_at < at, sa.and_(_p.created_at == at, _p.request_id < request_id)),
        ]
    stmt = (
        sa.select(*prediction_values.c, _f.label.label("feedback"))
        .select_from(_with_feedback)
        .where(*where)
        .order_by(*order)
        .limit(limit)
    )
    return _each_table(dialect, stmt, order, limit)


# PostgreSQL's two kinds of row, each read with its own indexes.
_TABLES = (predictions, prediction_chunk_values)


def _each_table(
    dialect: str, stmt: sa.Select[Any], order: list[Any], limit: int | None
) -> sa.Select[Any]:
    """`stmt`, which reads the first `limit` rows of `prediction_values` in `order`, run on
    each table on PostgreSQL (queries.per_table), then the first `limit` of both. Over the
    view as a whole the planner takes a chunk to expand into 100 rows (a function's default
    estimate) rather than thousands, and sorts every row of the range instead of walking the
    time index: 1.4 s against 20 ms for a page at 1M chunk rows."""
    if dialect != "postgresql" or limit is None:
        return stmt
    parts = [part.subquery() for part in per_table(dialect, stmt)]
    both = sa.union_all(*(sa.select(*part.c) for part in parts)).subquery("newest")
    return sa.select(*both.c).order_by(*_on(both, order)).limit(limit)


def per_table(dialect: str, stmt: sa.Select[Any]) -> list[sa.Select[Any]]:
    """`stmt` over `prediction_values` as one statement per table on PostgreSQL, for results
    that add up (counts by key): each is planned on its own table's statistics. Over the
    view the planner lost the row table's estimates, sorted a million rows on disk to group
    them, and the History page's stats took 1.5 s instead of 0.58 s. Elsewhere, [stmt]."""
    if dialect != "postgresql":
        return [stmt]
    return [_over(stmt, table) for table in _TABLES]


def _over(stmt: sa.Select[Any], source: Any) -> sa.Select[Any]:
    """`stmt` with `prediction_values` and its columns replaced by `source`'s, by name."""

    def swap(element: Any) -> Any:
        if element is prediction_values:
            return source
        if isinstance(element, sa.Column) and element.table is prediction_values:
            if element.name not in source.c:  # a chunk row's names, null for a plain row
                return sa.cast(sa.null(), element.type).label(element.name)
            if source is predictions and isinstance(element.type, sa.JSON):
                # jsonb as json, the view's type: both tables' rows in one union.
                return sa.cast(source.c[element.name], element.type).label(element.name)
            return source.c[element.name]
        return None

    return visitors.replacement_traverse(stmt, {}, swap)  # type: ignore[call-overload]


def _on(table: Any, clauses: Sequence[Any]) -> list[Any]:
    """`clauses` over `prediction_values` rewritten over `table`, column by column name."""

    def swap(element: Any) -> Any:
        if isinstance(element, sa.Column) and element.table is prediction_values:
            return table.c[element.name]
        return None

    return [visitors.replacement_traverse(clause, {}, swap) for clause in clauses]  # type: ignore[call-overload]


def volume(
    dialect: str, where: list[sa.ColumnElement[bool]], bucket_seconds: int
) -> sa.Select[Any]:
    """(bucket number since the epoch, version, count)."""
    if dialect == "postgresql":
        # Grouped on date_bin's timestamp, converted to a number once per group: per row,
        # EXTRACT(epoch) is numeric arithmetic and cost more than the scan.
        inner = _binned(where, bucket_seconds)
        return (
            sa.select(
                _bucket_number(inner.c.bucket, bucket_seconds),
                inner.c.model_version,
                sa.func.count(),
            )
            .group_by(inner.c.bucket, inner.c.model_version)
            .order_by(inner.c.bucket, inner.c.model_version)
        )
    # SQLite keeps UTC text: strftime('%s') reads it as UTC, in whole seconds.
    bucket = sa.cast(sa.func.strftime("%s", _p.created_at), sa.BigInteger) // bucket_seconds
    # Bucket in a subquery, group outside it: one expression, whatever the parameters.
    inner = sa.select(bucket.label("bucket"), _p.model_version).where(*where).subquery()
    return (
        sa.select(inner.c.bucket, inner.c.model_version, sa.func.count())
        .group_by(inner.c.bucket, inner.c.model_version)
        .order_by(inner.c.bucket, inner.c.model_version)
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _binned(where: list[sa.ColumnElement[bool]], bucket_seconds: int) -> sa.Subquery:
    """PostgreSQL: model_version, label, bucket (date_bin's start: a multiple of
    bucket_seconds since the epoch) and latency_bin (histogram.py) of the matching rows.

    OFFSET 0 keeps the planner from merging this subquery into the grouping above it. Merged,
    it estimates the groups of an expression over created_at as one per row (a million) and
    sorts every row, spilling to disk, to group them into a few hundred; kept apart, it has no
    statistics for `bucket` and assumes a few hundred values, and hashes."""
    stride = sa.literal(timedelta(seconds=bucket_seconds), sa.Interval())
    origin = sa.literal(_EPOCH, sa.DateTime(timezone=True))
    clamped = sa.func.least(sa.func.greatest(_p.latency_ms, LOWEST_MS), HIGHEST_MS)
    latency_bin = sa.cast(sa.func.ceil(sa.func.ln(clamped) / LN_GAMMA), sa.Integer)
    return (
        sa.select(
            _p.model_version.label("model_version"),
            _p.label.label("label"),
            sa.func.date_bin(stride, _p.created_at, origin).label("bucket"),
            latency_bin.label("latency_bin"),
        )
        .where(*where)
        .offset(0)
        .subquery()
    )


def _bucket_number(bucket: sa.ColumnElement[Any], bucket_seconds: int) -> sa.ColumnElement[Any]:
    epoch = sa.func.date_part("epoch", bucket)
    return sa.cast(sa.func.floor(epoch / bucket_seconds), sa.BigInteger)


# grouping(bucket, label, latency_bin) of each grouping set in `summary`: a bit is set for
# each column the set leaves out (the last column is the lowest bit).
SUMMARY_VOLUME, SUMMARY_CLASSES, SUMMARY_LATENCY = 0b011, 0b101, 0b110


def summary(where: list[sa.ColumnElement[bool]], bucket_seconds: int) -> sa.Select[Any]:
    """PostgreSQL only: volume, class counts and the latency histogram in one scan, as
    (set, model_version, bucket number, label, latency bin, count) with `set` one of the
    SUMMARY_* values and the columns the set does not group on null."""
    inner = _binned(where, bucket_seconds)
    c = inner.c
    return (
        sa.select(
            sa.func.grouping(c.bucket, c.label, c.latency_bin),
            c.model_version,
            _bucket_number(c.bucket, bucket_seconds),
            c.label,
            c.latency_bin,
            sa.func.count(),
        )
        .group_by(
            sa.func.grouping_sets(
                sa.tuple_(c.model_version, c.bucket),
                sa.tuple_(c.model_version, c.label),
                sa.tuple_(c.model_version, c.latency_bin),
            )
        )
        .order_by(c.bucket, c.model_version, c.label, c.latency_bin)
    )


def class_counts(where: list[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """(version, predicted label, count)."""
    return (
        sa.select(_p.model_version, _p.label, sa.func.count())
        .where(*where)
        .group_by(_p.model_version, _p.label)
        .order_by(_p.model_version, _p.label)
    )


def quality(where: list[sa.ColumnElement[bool]], dialect: str = "sqlite") -> sa.Select[Any]:
    """(version, n, correct, macro precision) over labelled predictions with feedback.

    As `classification_stats` (tables.py) computes them from feedback_counts, in SQL: the
    macro average runs over every label seen predicted or as feedback in the version, a label
    never predicted counting 0 (scikit-learn's zero_division=0)."""
    counted = (
        sa.select(
            _p.model_version.label("model_version"),
            _p.label.label("predicted"),
            _f.label.label("actual"),
            sa.func.count().label("n"),
        )
        .select_from(_only_feedback)
        .where(*where, _p.label.is_not(None))
        .group_by(_p.model_version, _p.label, _f.label)
    )
    parts = per_table(dialect, counted)
    if len(parts) > 1:  # each table's cells, added up
        both = sa.union_all(*parts).subquery("both_tables")
        counted = sa.select(
            both.c.model_version,
            both.c.predicted,
            both.c.actual,
            sa.func.sum(both.c.n).label("n"),
        ).group_by(both.c.model_version, both.c.predicted, both.c.actual)
    cells = counted.cte("cells")
    labels = sa.union(
        sa.select(cells.c.model_version, cells.c.predicted.label("label")),
        sa.select(cells.c.model_version, cells.c.actual.label("label")),
    ).cte("labels")
    predicted = cells.c.predicted == labels.c.label
    per_label = (
        sa.select(
            labels.c.model_version,
            sa.func.sum(sa.case((predicted, cells.c.n), else_=0)).label("predicted"),
            sa.func.sum(
                sa.case((sa.and_(predicted, cells.c.actual == labels.c.label), cells.c.n), else_=0)
            ).label("hits"),
        )
        .select_from(labels.join(cells, cells.c.model_version == labels.c.model_version))
        .group_by(labels.c.model_version, labels.c.label)
        .cte("per_label")
    )
    q = per_label.c
    ratio = sa.cast(q.hits, sa.Float) / sa.cast(q.predicted, sa.Float)
    precision = sa.case((q.predicted > 0, ratio), else_=0.0)
    totals = (sa.func.sum(q.predicted), sa.func.sum(q.hits), sa.func.avg(precision))
    return sa.select(q.model_version, *totals).group_by(q.model_version).order_by(q.model_version)


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

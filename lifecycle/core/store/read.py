"""The prediction store's read side: windows of one model's predictions for drift reports, and
the aggregates and paged browsing the UI's history page shows.

`queries.py` builds the statements (SQLAlchemy Core, PostgreSQL and SQLite), this module runs
them and `frames.py` shapes the results. Aggregates are grouped in the database; only latency
percentiles are finished in Python: `summary`'s on PostgreSQL from a histogram counted there
(`histogram.py`), and on SQLite from the ordered latencies (no percentile function there).
Costs and indexes: docs/prediction-store.md, "Reading the log".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lifecycle.core.store import histogram, queries
from lifecycle.core.store.chunks import as_record
from lifecycle.core.store.database import raise_unavailable
from lifecycle.core.store.frames import (
    LABELLED_COLUMNS,
    WINDOW_COLUMNS,
    interpolated,
    predictions_frame,
    to_arrow,
)
from lifecycle.core.store.queries import filters
from lifecycle.core.store.tables import as_utc, feedback, make_engine, prediction_values

if TYPE_CHECKING:
    from lifecycle.core.settings import Settings


class WindowFilter(TypedDict, total=False):
    """The keyword filters of `PredictionReader.window`."""

    version: str | None
    last: int | None
    since: datetime | None
    until: datetime | None
    source: str | None


Cursor = tuple[datetime, str]
"""(created_at, request_id) of the last row of a page: pass it as `before` for the next one."""

PERCENTILES = (0.5, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class Summary:
    """`PredictionReader.summary`: the frames of `volume`, `class_counts` and
    `latency_percentiles` over one range."""

    volume: pd.DataFrame
    classes: pd.DataFrame
    latency: pd.DataFrame


class PredictionReader:
    """Queries over the prediction log. Opens no connection until the first query and never
    writes; a database without the tables yet reads as empty. Failures to reach the database
    raise StoreUnavailable."""

    def __init__(self, database_url: str) -> None:
        self.engine: Engine = make_engine(database_url)
        self._dialect = self.engine.dialect.name
        self._tables_seen = False

    @classmethod
    def from_settings(cls, settings: Settings) -> PredictionReader:
        return cls(settings.resolved_database_url())

    def dispose(self) -> None:
        self.engine.dispose()

    def _rows(self, stmt: sa.Select[Any]) -> Sequence[Any]:
        try:
            with self.engine.connect() as conn:
                if not self._tables_seen:
                    inspector = sa.inspect(conn)
                    if not all(inspector.has_table(t.name) for t in (prediction_values, feedback)):
                        return []
                    self._tables_seen = True
                return conn.execute(stmt).all()
        except sa.exc.SQLAlchemyError as exc:
            raise_unavailable(exc)
            raise

    def _summed(
        self, stmt: sa.Select[Any], order: Sequence[int] | None = None
    ) -> list[tuple[Any, ...]]:
        """Rows of a count by key (the last column), run per table (queries.per_table) and
        added up by key, ordered as the statement orders them: by the key's columns at the
        `order` positions (default: all, in turn), nulls last."""
        parts = queries.per_table(self._dialect, stmt)
        if len(parts) == 1:
            return [tuple(row) for row in self._rows(stmt)]
        totals: dict[tuple[Any, ...], int] = {}
        for part in parts:
            for *key, n in self._rows(part):
                totals[tuple(key)] = totals.get(tuple(key), 0) + int(n)
        positions = (
            list(order) if order is not None else list(range(len(stmt.selected_columns) - 1))
        )
        ordered = sorted(totals, key=lambda key: tuple((key[i] is None, key[i]) for i in positions))
        return [(*key, totals[key]) for key in ordered]

    # -- rows ------------------------------------------------------------------------------

    def window(
        self,
        model_name: str,
        *,
        version: str | None = None,
        last: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        source: str | None = None,
        sample: int | None = None,
        total: int | None = None,
    ) -> pd.DataFrame:
        """One model's predictions, oldest first: the `last` N rows, and/or those created in
        [since, until). Fixed columns (WINDOW_COLUMNS; `feedback` is the feedback label or
        None), then one column per feature in name order; numeric features are float64.

        With `sample`, a window of more rows than that is read as a uniform random sample of
        about `sample` rows, drawn in the database (the rest never leaves it). `total`, when
        the caller has just counted the window (`count`), saves counting it again."""
        _check_last(last)
        where = filters(model_name, version=version, source=source, since=since, until=until)
        if sample is not None:
            where, last = self._sampled(where, last, sample, total)
        rows = self._rows(queries.window(self._dialect, where, last))
        return predictions_frame(
            rows, WINDOW_COLUMNS, reverse=last is not None, json_text=("prediction",)
        )

    def count(self, model_name: str, **window: Unpack[WindowFilter]) -> int:
        """How many predictions `window` would return (without sampling)."""
        last = window.get("last")
        _check_last(last)
        where = filters(
            model_name,
            version=window.get("version"),
            source=window.get("source"),
            since=window.get("since"),
            until=window.get("until"),
        )
        rows = self._summed(queries.count(where))
        total = int(rows[0][0]) if rows else 0
        return total if last is None else min(total, last)

    def _sampled(
        self,
        where: list[sa.ColumnElement[bool]],
        last: int | None,
        sample: int,
        total: int | None,
    ) -> tuple[list[sa.ColumnElement[bool]], int | None]:
        if sample < 1:
            raise ValueError(f"sample must be >= 1, not {sample}")
        if total is None:
            rows = self._summed(queries.count(where))
            total = int(rows[0][0]) if rows else 0
            if last is not None:
                total = min(total, last)
        if total <= sample:
            return where, last
        if last is not None:
            # The last N rows are those since the N-th newest: a time bound the sample can use.
            start = self._rows(queries.nth_newest(where, last))[0][0]
            where = [*where, prediction_values.c.created_at >= start]
        return [*where, queries.sampled(self._dialect, sample / total)], None

    def window_arrow(self, model_name: str, **window: Unpack[WindowFilter]) -> pa.Table:
        """`window` as an Arrow table (a prediction column of mixed types becomes JSON text)."""
        return to_arrow(self.window(model_name, **window))

    def labelled(
        self,
        model_name: str,
        *,
        version: str | None = None,
        last: int | None = None,
        since: datetime | None = None,
    ) -> pd.DataFrame:
        """Predictions that received feedback, oldest first: request_id, created_at,
        model_version, label (predicted), actual (the feedback label), then the features."""
        _check_last(last)
        where = filters(model_name, version=version, since=since)
        rows = self._rows(queries.labelled(self._dialect, where, last))
        return predictions_frame(rows, LABELLED_COLUMNS, reverse=last is not None)

    def first(self, model_name: str, version: str) -> tuple[str, datetime] | None:
        """(request id, time) of the oldest stored prediction by that version, or None."""
        p = prediction_values.c
        stmt = (
            sa.select(p.request_id, p.created_at)
            .where(p.model_name == model_name, p.model_version == version)
            .order_by(p.created_at, p.request_id)
            .limit(1)
        )
        rows = self._rows(stmt)
        return (str(rows[0][0]), as_utc(rows[0][1])) if rows else None

    def page(
        self,
        model_name: str,
        *,
        version: str | None = None,
        source: str | None = None,
        label: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        before: Cursor | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` predictions as dicts (every column, features and probabilities as
        dicts, plus `feedback`), newest first, strictly older than the cursor `before` in
        (created_at, request_id) order: keyset paging, each page costs the same."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        where = filters(model_name, source=source, label=label, since=since, until=until)
        records = []
        for row in self._rows(queries.page(where, limit, before, version, self._dialect)):
            record = as_record(row._mapping)
            record["created_at"] = as_utc(record["created_at"])
            records.append(record)
        return records

    # -- aggregates (grouped in the database) ----------------------------------------------

    def volume(
        self, model_name: str, bucket_seconds: int, since: datetime, until: datetime
    ) -> pd.DataFrame:
        """Predictions per time bucket and version in [since, until): bucket (start, UTC,
        aligned to multiples of bucket_seconds since the epoch), model_version, count.
        Buckets without predictions are absent."""
        if bucket_seconds < 1:
            raise ValueError(f"bucket_seconds must be >= 1, not {bucket_seconds}")
        where = filters(model_name, since=since, until=until)
        rows = self._summed(queries.volume(self._dialect, where, bucket_seconds))
        return _volume_frame(rows, bucket_seconds)

    def class_counts(
        self, model_name: str, since: datetime | None = None, until: datetime | None = None
    ) -> pd.DataFrame:
        """Predicted labels per version: model_version, label (None for unlabelled), count."""
        rows = self._summed(queries.class_counts(filters(model_name, since=since, until=until)))
        return _classes_frame(rows)

    def quality(
        self, model_name: str, since: datetime | None = None, until: datetime | None = None
    ) -> pd.DataFrame:
        """Per version, over labelled predictions that received feedback: n, correct (predicted
        label == feedback label), accuracy = correct / n and precision (macro), all computed
        in the database and equal to what feedback_stats gives."""
        where = filters(model_name, since=since, until=until)
        rows = self._rows(queries.quality(where, self._dialect))
        frame = pd.DataFrame(
            [(v, int(n), int(c), float(p)) for v, n, c, p in rows],
            columns=["model_version", "n", "correct", "precision"],
        )
        frame = frame.astype(
            {"model_version": object, "n": "int64", "correct": "int64", "precision": "f8"}
        )
        frame.insert(3, "accuracy", (frame["correct"] / frame["n"]).astype("float64"))
        return frame

    def latency_percentiles(
        self,
        model_name: str,
        since: datetime | None = None,
        percentiles: Sequence[float] = PERCENTILES,
        until: datetime | None = None,
    ) -> pd.DataFrame:
        """Per version: n and latency_ms percentiles (columns p50, p90, ...), interpolated
        linearly between ranks: PostgreSQL's percentile_cont in the database; on SQLite the
        latencies are read in order and interpolated the same way in Python."""
        _check_percentiles(percentiles)
        names = _percentile_names(percentiles)
        stmt = queries.latency_percentiles(
            self._dialect, filters(model_name, since=since, until=until), percentiles
        )
        rows = self._rows(stmt)
        if self._dialect != "postgresql":
            rows = interpolated(rows, percentiles)
        return _latency_frame(rows, names)

    def summary(
        self,
        model_name: str,
        bucket_seconds: int,
        since: datetime,
        until: datetime,
        percentiles: Sequence[float] = PERCENTILES,
    ) -> Summary:
        """`volume`, `class_counts` and `latency_percentiles` over [since, until), in one scan
        on PostgreSQL (a GROUP BY of three grouping sets). There the percentiles come from a
        log-scale latency histogram and are within histogram.ALPHA (1 %) of the exact ones;
        on SQLite they are the exact `latency_percentiles`."""
        _check_percentiles(percentiles)
        if self._dialect != "postgresql":
            return Summary(
                self.volume(model_name, bucket_seconds, since, until),
                self.class_counts(model_name, since, until),
                self.latency_percentiles(model_name, since, percentiles, until),
            )
        if bucket_seconds < 1:
            raise ValueError(f"bucket_seconds must be >= 1, not {bucket_seconds}")
        where = filters(model_name, since=since, until=until)
        # Ordered by bucket, version, label, latency bin, as the statement orders them.
        rows = self._summed(queries.summary(where, bucket_seconds), order=(2, 1, 3, 4))
        volume, classes = [], []
        bins: dict[str, list[tuple[int, int]]] = {}
        for kind, version, bucket, label, latency_bin, count in rows:
            if kind == queries.SUMMARY_VOLUME:
                volume.append((bucket, version, count))
            elif kind == queries.SUMMARY_CLASSES:
                classes.append((version, label, count))
            elif kind == queries.SUMMARY_LATENCY:
                bins.setdefault(version, []).append((latency_bin, count))
        latency = [
            (version, *histogram.percentiles(pairs, percentiles))
            for version, pairs in sorted(bins.items())
        ]
        return Summary(
            _volume_frame(volume, bucket_seconds),
            _classes_frame(classes),
            _latency_frame(
                [(v, n, *values) for v, n, values in latency], _percentile_names(percentiles)
            ),
        )


def _check_last(last: int | None) -> None:
    if last is not None and last < 0:
        raise ValueError(f"last must be >= 0, not {last}")


def _check_percentiles(percentiles: Sequence[float]) -> None:
    if not percentiles or any(not 0 <= q <= 1 for q in percentiles):
        raise ValueError(f"percentiles must be within [0, 1], not {list(percentiles)}")


def _percentile_names(percentiles: Sequence[float]) -> list[str]:
    return [f"p{q * 100:g}" for q in percentiles]


def _volume_frame(rows: Sequence[Any], bucket_seconds: int) -> pd.DataFrame:
    """(bucket number, version, count) rows as bucket (start, UTC), model_version, count."""
    frame = pd.DataFrame(
        [(int(b) * bucket_seconds, v, int(n)) for b, v, n in rows],
        columns=["bucket", "model_version", "count"],
    )
    frame["bucket"] = pd.to_datetime(frame["bucket"].astype("int64"), unit="s", utc=True)
    return frame.astype({"model_version": object, "count": "int64"})


def _classes_frame(rows: Sequence[Any]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["model_version", "label", "count"])
    return frame.astype({"model_version": object, "label": object, "count": "int64"})


def _latency_frame(rows: Sequence[Any], names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["model_version", "n", *names])
    return frame.astype({"model_version": object, "n": "int64", **dict.fromkeys(names, "f8")})

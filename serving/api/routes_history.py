"""History: the prediction log paged, aggregated and exported, and this process's swaps.

What the UI's history page reads, over HTTP. Every query is `PredictionReader`'s (grouped in
the database, keyset paging), run off the event loop; these routes only parse the filters and
shape the answers. docs/serving.md, "History".
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from lifecycle.core.errors import LifecycleError
from lifecycle.core.store import PERCENTILES, Cursor, PredictionReader
from lifecycle.core.store.tables import as_utc
from serving.api import schemas
from serving.api.deps import HolderDep, PredictionsDep
from serving.api.models import (
    PRINTABLE_PATTERN,
    ClassCount,
    LatencyPercentiles,
    ModelHistory,
    PredictionPage,
    PredictionStats,
    Source,
    StoredPrediction,
    SwapRecord,
    VersionQuality,
    VolumeBucket,
)
from serving.api.params import (
    BeforeQuery,
    LabelQuery,
    ServedModelQuery,
    SinceQuery,
    UntilQuery,
    VersionQuery,
)
from serving.runtime.history import SwapEvent

router = APIRouter(tags=["history"])

PAGE_LIMIT = 1000
CSV_LIMIT = 100_000
DEFAULT_SPAN = timedelta(hours=24)
# About this many buckets over the span when none is asked for: a readable volume chart.
TARGET_BUCKETS = 60
# Bucket sizes a chart axis reads well; longer spans use whole days.
NICE_BUCKETS = (
    *(1, 2, 5, 10, 15, 30),
    *(60, 120, 300, 600, 900, 1800),
    *(3600, 7200, 10800, 21600, 43200),
)
DAY = 86400
# 100 years: longer buckets say nothing, and the bound keeps bucket arithmetic in 64 bits.
MAX_BUCKET = 100 * 366 * DAY
# Per version: a chart of more buckets is unreadable, and its answer megabytes of JSON.
MAX_BUCKETS = 10_000
_PRINTABLE = re.compile(PRINTABLE_PATTERN)
_STORE_DOWN = {503: "The prediction store (application database) is unavailable"}


class InvalidQuery(LifecycleError):
    status_code = 422


# -- filters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowFilter:
    """The filters of /predictions and /predictions.csv, checked and in UTC."""

    model: str
    version: str | None
    source: str | None
    label: str | None
    since: datetime | None
    until: datetime | None
    before: Cursor | None

    def page(self, reader: PredictionReader, limit: int) -> list[dict[str, Any]]:
        return reader.page(
            self.model,
            version=self.version,
            source=self.source,
            label=self.label,
            since=self.since,
            until=self.until,
            limit=limit,
            before=self.before,
        )


async def row_filter(
    holder: HolderDep,
    model: ServedModelQuery = None,
    version: VersionQuery = None,
    source: Annotated[Source | None, Query(description="How the prediction came in.")] = None,
    label: LabelQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    before: BeforeQuery = None,
) -> RowFilter:
    return RowFilter(
        model=model or holder.target.name,
        version=version,
        source=source,
        label=label,
        since=_maybe_utc("since", since),
        until=_maybe_utc("until", until),
        before=decode_cursor(before) if before is not None else None,
    )


Filters = Annotated[RowFilter, Depends(row_filter)]


def _maybe_utc(field: str, value: datetime | None) -> datetime | None:
    return None if value is None else _utc(field, value)


def _utc(field: str, value: datetime) -> datetime:
    try:
        return as_utc(value)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before the first UTC date
        raise InvalidQuery(f"{field}: {value.isoformat()} is out of range") from None


# -- the cursor: (created_at, request_id) of a page's last row, opaque to clients -------------


def encode_cursor(created_at: datetime, request_id: str) -> str:
    raw = json.dumps([as_utc(created_at).isoformat(), request_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        at_text, request_id = json.loads(raw)
        at = datetime.fromisoformat(at_text)
        # A forged id must not reach the driver: no NUL, no lone surrogate.
        request_id.encode()
    except (ValueError, TypeError, AttributeError):  # binascii and JSON errors are ValueErrors
        raise _bad_cursor() from None
    if not isinstance(request_id, str) or len(request_id) > 255 or at.tzinfo is None:
        raise _bad_cursor()
    if not _PRINTABLE.fullmatch(request_id):
        raise _bad_cursor()
    return _utc("before", at), request_id


def _bad_cursor() -> InvalidQuery:
    return InvalidQuery("before: not a cursor: pass the `next` of the previous page")


# -- rows ------------------------------------------------------------------------------------


@router.get(
    "/predictions",
    summary="Logged predictions, newest first, a page at a time",
    responses=schemas.error_responses({422: "A filter is not valid", **_STORE_DOWN}),
)
async def list_predictions(
    reader: PredictionsDep,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT, description="Rows per page.")] = 50,
) -> PredictionPage:
    # One row more than asked says whether another page exists, so the last page's `next`
    # is null rather than a cursor to an empty page.
    rows = await run_in_threadpool(filters.page, reader, limit + 1)
    shown = rows[:limit]
    more = len(rows) > limit
    return PredictionPage(
        predictions=[_stored(row) for row in shown],
        next=encode_cursor(shown[-1]["created_at"], shown[-1]["request_id"]) if more else None,
    )


def _stored(row: dict[str, Any]) -> StoredPrediction:
    return StoredPrediction.model_validate({k: row[k] for k in StoredPrediction.model_fields})


@router.get(
    "/predictions.csv",
    summary="Logged predictions as CSV (one column per feature), newest first",
    response_class=Response,
    responses={
        200: {
            "description": "CSV with a header row",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **schemas.error_responses({422: "A filter is not valid", **_STORE_DOWN}),
    },
)
async def predictions_csv(
    reader: PredictionsDep,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=CSV_LIMIT, description="Most rows.")] = 10_000,
) -> Response:
    # Reading and formatting up to 100k rows is CPU work: both in the thread pool.
    text = await run_in_threadpool(_read_csv, reader, filters, limit)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", filters.model)
    return Response(
        text,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}-predictions.csv"'},
    )


def _read_csv(reader: PredictionReader, filters: RowFilter, limit: int) -> str:
    return rows_csv(filters.page(reader, limit))


CSV_COLUMNS = (
    "request_id",
    "created_at",
    "source",
    "model_version",
    "run_id",
    "prediction",
    "label",
    "probabilities",
    "latency_ms",
    "feedback",
)


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """The fixed columns, then one column per feature (name order; a feature named like a
    fixed column is `features.<name>`, as in the reader's windows). Nested values are JSON."""
    names = sorted({name for row in rows for name in row["features"]})
    headers = [f"features.{n}" if n in CSV_COLUMNS else n for n in names]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *headers])
    for row in rows:
        fixed = [_cell(row[c]) for c in CSV_COLUMNS]
        writer.writerow([*fixed, *(_cell(row["features"].get(n)) for n in names)])
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else value


# -- aggregates ------------------------------------------------------------------------------


@router.get(
    "/predictions/stats",
    summary="Volume, classes, latency and quality per version over a time range",
    responses=schemas.error_responses({422: "A parameter is not valid", **_STORE_DOWN}),
)
async def prediction_stats(
    reader: PredictionsDep,
    holder: HolderDep,
    model: ServedModelQuery = None,
    since: Annotated[
        datetime | None, Query(description="ISO 8601 time, inclusive; absent: until - 24 h.")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="ISO 8601 time, exclusive; absent: now.")
    ] = None,
    bucket: Annotated[
        int | None,
        Query(ge=1, le=MAX_BUCKET, description="Volume bucket in seconds; absent: span / 60."),
    ] = None,
) -> PredictionStats:
    read_at = datetime.now(UTC)
    start, end = _range(since, until, read_at)
    name = model or holder.target.name
    seconds = bucket or nice_bucket(end - start)
    if (end - start).total_seconds() / seconds > MAX_BUCKETS:
        raise InvalidQuery(
            f"bucket: {seconds} s makes more than {MAX_BUCKETS} buckets from since to until"
        )
    # Two independent statements (one scan for volume, classes and latency; the feedback
    # join): concurrently, so the answer takes the slower, not the sum.
    summary, quality = await asyncio.gather(
        run_in_threadpool(reader.summary, name, seconds, start, end, PERCENTILES),
        run_in_threadpool(reader.quality, name, start, end),
    )
    return PredictionStats(
        model=name,
        since=start,
        until=end,
        bucket_seconds=seconds,
        volume=_volume(summary.volume),
        classes=_classes(summary.classes),
        latency=_latency(summary.latency),
        quality=_quality(quality),
        read_at=read_at,
    )


def _range(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """(since, until) in UTC, defaults filled in; since must come before until."""
    end = _maybe_utc("until", until) or now
    start = _maybe_utc("since", since)
    if start is None:
        try:
            start = end - DEFAULT_SPAN
        except OverflowError:
            raise InvalidQuery(f"until: {end.isoformat()} is too early for a 24 h range") from None
    if start >= end:
        raise InvalidQuery(f"until: {end.isoformat()} is not after since {start.isoformat()}")
    return start, end


def nice_bucket(span: timedelta) -> int:
    """The smallest readable bucket giving at most about TARGET_BUCKETS buckets over span."""
    target = span.total_seconds() / TARGET_BUCKETS
    for size in NICE_BUCKETS:
        if size >= target:
            return size
    days = -(-int(target) // DAY)  # ceiling
    return min(days * DAY, MAX_BUCKET)


def _none_if_nan(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _volume(frame: pd.DataFrame) -> list[VolumeBucket]:
    return [
        VolumeBucket(bucket=b.to_pydatetime(), model_version=str(v), count=int(n))
        for b, v, n in frame[["bucket", "model_version", "count"]].itertuples(index=False)
    ]


def _classes(frame: pd.DataFrame) -> list[ClassCount]:
    return [
        ClassCount(model_version=str(v), label=None if pd.isna(label) else str(label), count=int(n))
        for v, label, n in frame[["model_version", "label", "count"]].itertuples(index=False)
    ]


def _latency(frame: pd.DataFrame) -> list[LatencyPercentiles]:
    columns = ["model_version", "n", "p50", "p90", "p95", "p99"]
    return [
        LatencyPercentiles(
            model_version=str(v),
            n=int(n),
            p50=_none_if_nan(p50),
            p90=_none_if_nan(p90),
            p95=_none_if_nan(p95),
            p99=_none_if_nan(p99),
        )
        for v, n, p50, p90, p95, p99 in frame[columns].itertuples(index=False)
    ]


def _quality(frame: pd.DataFrame) -> list[VersionQuality]:
    columns = ["model_version", "n", "correct", "accuracy", "precision"]
    return [
        VersionQuality(
            model_version=str(v), n=int(n), correct=int(c), accuracy=float(a), precision=float(p)
        )
        for v, n, c, a, p in frame[columns].itertuples(index=False)
    ]


# -- this process's swaps ----------------------------------------------------------------------


@router.get(
    "/model/history",
    summary="This process's model swaps and failed swaps, newest first (each worker its own)",
)
async def model_history(holder: HolderDep) -> ModelHistory:
    return ModelHistory(pid=os.getpid(), swaps=[_swap(event) for event in holder.history.events()])


def _swap(event: SwapEvent) -> SwapRecord:
    return SwapRecord(
        kind=event.kind,
        name=event.name,
        version=event.version,
        at=event.at,
        run_id=event.run_id,
        load_seconds=event.seconds,
        previous_version=event.previous_version,
        reason=event.reason,
    )

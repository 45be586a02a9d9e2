"""Timings of the prediction store's read side (lifecycle/core/store/read.py) on N rows.

Writes N iris predictions (two versions, a third with feedback) through PredictionStore.write
into a scratch SQLite file, or into a throwaway database on the PostgreSQL given by
--postgres (an admin URL: the database is created and dropped), then times each query.
--without-read-indexes drops the read side's indexes before writing, to see what they cost the
writes and save the reads.

    python -m benchmarks.store_read [--rows 100000] [--postgres postgresql+psycopg2://...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from lifecycle.core.store import PredictionReader, PredictionStore
from tests.support.services import POSTGRES_ENV, temp_database
from tests.support.store_records import make_record

READ_INDEXES = ("ix_predictions_model_time", "ix_predictions_model_version_time")
T0 = datetime(2024, 5, 1, tzinfo=UTC)


@contextmanager
def database(postgres: str | None, workdir: Path) -> Iterator[str]:
    if postgres is None:
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    os.environ[POSTGRES_ENV] = postgres
    with temp_database("lc_bench") as url:
        yield url


def timed(label: str, fn: Callable[[], Any], repeat: int = 3) -> Any:
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    size = result.num_rows if isinstance(result, pa.Table) else len(result)
    print(f"{label:<44} {best * 1000:9.1f} ms  ({size} rows)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL to make a database on")
    parser.add_argument("--without-read-indexes", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, database(args.postgres, Path(tmp)) as url:
        store = PredictionStore(url, Path(tmp) / "spool", batch_size=5000)
        if args.without_read_indexes:
            store.write([make_record(0, request_id="schema")])  # creates the tables
            with store._db.engine.begin() as conn:
                for name in READ_INDEXES:
                    conn.execute(sa.text(f"DROP INDEX {name}"))
        step = timedelta(days=7) / args.rows
        records = [
            dataclasses.replace(
                make_record(i, version="1" if i % 2 else "2"), created_at=T0 + i * step
            )
            for i in range(args.rows)
        ]
        start = time.perf_counter()
        store.write(records)
        elapsed = time.perf_counter() - start
        print(f"{store._db.engine.dialect.name}: wrote {args.rows} rows in {elapsed:.1f} s")
        for record in records[::3]:
            store._db.set_feedback(record.request_id, record.label or "")
        store.stop()

        reader = PredictionReader(url)
        if reader.engine.dialect.name == "postgresql":
            # Statistics, as autovacuum would soon gather them: the plans of a table in use.
            with reader.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(sa.text("ANALYZE"))
        name = "iris-classifier"
        timed("window(all)", lambda: reader.window(name))
        timed("window(last=10_000)", lambda: reader.window(name, last=10_000))
        timed(
            "window(version='1', one day)",
            lambda: reader.window(name, version="1", since=T0, until=T0 + timedelta(days=1)),
        )
        timed("window_arrow(all)", lambda: reader.window_arrow(name))
        timed("labelled(all)", lambda: reader.labelled(name))
        timed(
            "volume(1 h buckets, 7 days)",
            lambda: reader.volume(name, 3600, T0, T0 + timedelta(days=7)),
        )
        timed("class_counts", lambda: reader.class_counts(name))
        timed("quality", lambda: reader.quality(name))
        timed("latency_percentiles", lambda: reader.latency_percentiles(name))
        first = timed("page(limit=50)", lambda: reader.page(name))
        cursor = (first[-1]["created_at"], first[-1]["request_id"])
        timed("page(limit=50, before=...)", lambda: reader.page(name, before=cursor))
        reader.dispose()


if __name__ == "__main__":
    main()

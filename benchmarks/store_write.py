"""The prediction log's write path on PostgreSQL: COPY through a staging table, from rows and
from a columnar batch, against the multi-row INSERT it replaces, side by side in one run on the
same rows.

Each round stores the same pre-built records (iris-shaped: four features, a label, three
probabilities) into an emptied table with `PredictionDatabase.insert` (`insert_columns` for
the columnar path), in batches of `--batch` rows (the writer thread's and a batch file chunk's
unit), once per path; the order of the paths reverses between rounds, after a warm-up round of
each. The COPY paths run twice: with rows flagged `recheck` (looked up by request id, as a
task's rows are) and unflagged ("keyed": the key alone, as REST rows with a server-generated
id and batch file jobs). Reported: rows/s, median and best of each path, and the ratio of the
medians.

    python -m benchmarks.store_write [--rows 200000] [--batch 500] [--rounds 5] [--write-docs]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from benchmarks.docs_section import write_section
from lifecycle.core.store.columns import PredictionColumns
from lifecycle.core.store.database import PredictionDatabase
from lifecycle.core.store.tables import PredictionRecord
from tests.support.services import temp_database

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START = "<!-- store-write:start -->"
END = "<!-- store-write:end -->"
LABELS = ("setosa", "versicolor", "virginica")
PATHS = ("columns", "columns-keyed", "copy", "copy-keyed", "insert")


def records(n: int) -> list[PredictionRecord]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        label = LABELS[i % 3]
        out.append(
            PredictionRecord(
                request_id=uuid.uuid4().hex,
                created_at=now,
                source="batch",
                model_name="iris-classifier",
                model_version="1",
                run_id="0123456789abcdef0123456789abcdef",
                features={
                    "sepal length (cm)": 5.1 + (i % 17) / 10,
                    "sepal width (cm)": 3.5 - (i % 7) / 10,
                    "petal length (cm)": 1.4 + (i % 23) / 10,
                    "petal width (cm)": 0.2 + (i % 11) / 10,
                },
                prediction=i % 3,
                label=label,
                probabilities={name: (0.8 if name == label else 0.1) for name in LABELS},
                latency_ms=0.42,
            )
        )
    return out


def as_columns(rows: list[PredictionRecord]) -> PredictionColumns:
    """The same records as one columnar batch (they share their time and latency)."""
    first = rows[0]
    names = tuple(first.features)
    classes = tuple(first.probabilities or ())
    return PredictionColumns(
        request_ids=[r.request_id for r in rows],
        created_at=first.created_at,
        source=first.source,
        model_name=first.model_name,
        model_version=first.model_version,
        run_id=first.run_id,
        feature_names=names,
        features=np.array([[r.features[n] for n in names] for r in rows], dtype=np.float64),
        predictions=np.array([r.prediction for r in rows]),
        labels=[str(r.label) for r in rows],
        class_labels=classes,
        probabilities=np.array([[(r.probabilities or {})[c] for c in classes] for r in rows]),
        latency_ms=first.latency_ms,
        recheck=first.recheck,
    )


def store(db: PredictionDatabase, rows: list[PredictionRecord], batch: int, path: str) -> float:
    """Seconds to store `rows` into an empty table through one path."""
    with db.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE predictions"))
    db._copy = path != "insert"  # the path under test; everything else is the store's own code
    columns = as_columns(rows) if path.startswith("columns") else None
    started = time.perf_counter()
    stored = 0
    for start in range(0, len(rows), batch):
        if columns is not None:
            stored += db.insert_columns(_slice(columns, start, start + batch))
        else:
            stored += db.insert(rows[start : start + batch])
    elapsed = time.perf_counter() - started
    assert stored == len(rows), f"stored {stored} of {len(rows)}"
    return elapsed


def _slice(columns: PredictionColumns, start: int, stop: int) -> PredictionColumns:
    probabilities = columns.probabilities
    return dataclasses.replace(
        columns,
        request_ids=columns.request_ids[start:stop],
        features=columns.features[start:stop],
        predictions=columns.predictions[start:stop],
        labels=columns.labels[start:stop],
        probabilities=None if probabilities is None else probabilities[start:stop],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each path")
    parser.add_argument("--postgres", help="admin URL (default: LIFECYCLE_TEST_POSTGRES_URL)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if args.postgres:
        os.environ["LIFECYCLE_TEST_POSTGRES_URL"] = args.postgres
    rows = records(args.rows)
    keyed = [dataclasses.replace(r, recheck=False) for r in rows]
    inputs = {path: keyed if path.endswith("-keyed") else rows for path in PATHS}
    seconds: dict[str, list[float]] = {path: [] for path in PATHS}
    with temp_database("lc_store_write") as url:
        db = PredictionDatabase(url, on_rejected=lambda n: None)
        db.ensure_schema()
        try:
            for path in PATHS:  # warm-up: connections, temp table, caches
                store(db, inputs[path], args.batch, path)
            for round_ in range(args.rounds):
                order = PATHS if round_ % 2 == 0 else PATHS[::-1]
                for path in order:
                    seconds[path].append(store(db, inputs[path], args.batch, path))
                    rate = args.rows / seconds[path][-1]
                    print(f"round {round_ + 1} {path:6s} {rate:10,.0f} rows/s", flush=True)
        finally:
            db.dispose()
    rates = {p: [args.rows / s for s in secs] for p, secs in seconds.items()}
    medians = {p: statistics.median(r) for p, r in rates.items()}
    lines = [
        START,
        "## Prediction log writes (PostgreSQL)",
        "",
        f"`python -m benchmarks.store_write --rows {args.rows} --batch {args.batch} "
        f"--rounds {args.rounds}`: {args.rows:,} iris-shaped records stored by "
        f"`PredictionDatabase.insert` (`insert_columns`) in batches of {args.batch}, into an "
        "emptied table, "
        "each path once per round in alternating order after a warm-up round of each "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}).",
        "",
        "| path | median rows/s | best rows/s |",
        "|---|---|---|",
        *(
            f"| {name} | {medians[p]:,.0f} | {max(rates[p]):,.0f} |"
            for p, name in (
                ("columns", "columnar batch (`insert_columns`): COPY text built from columns"),
                ("columns-keyed", "the same, rows not flagged `recheck` (the key alone)"),
                ("copy", "COPY into a staging table + INSERT ... SELECT ON CONFLICT"),
                ("copy-keyed", "the same, rows not flagged `recheck` (the key alone)"),
                ("insert", "multi-row INSERT ... ON CONFLICT (before)"),
            )
        ),
        "",
        f"COPY / INSERT, medians: **{medians['copy'] / medians['insert']:.2f}x**; "
        f"columns / COPY from rows: **{medians['columns'] / medians['copy']:.2f}x**; "
        f"unflagged / flagged, medians: COPY **{medians['copy-keyed'] / medians['copy']:.2f}x**, "
        f"columns **{medians['columns-keyed'] / medians['columns']:.2f}x**.",
        END,
    ]
    print("\n".join(lines[1:-1]))
    if args.write_docs:
        write_section(DOCS, "\n".join(lines), START, END)


if __name__ == "__main__":
    main()

"""Batch files: a CSV or Parquet file scored chunk by chunk into a file of the same type.

Chunks are read and written with Arrow (batch_arrow.py). Each is checked by the same validator
as a JSON body (`validation.frame_rows`), scored in one model call and stored as columns
(batch_columns.py, `PredictionStore.write_columns`) before its rows are written out, with no
Python object per row on the way.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.core.schema import FeatureSchema
from lifecycle.core.settings import Settings
from serving import batch_arrow, batch_columns, validation
from serving.async_scoring import storable_failures
from serving.runtime import LoadedModel
from serving.validation import InvalidInput
from serving.wiring import Runtime

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# The Celery state a running file task reports after each chunk, with {"rows": n}.
PROGRESS_STATE = "PROGRESS"
# The task message header carrying a file job's accepted time (ISO 8601, UTC), sent only for a
# job id the server generated: every delivery of the job stamps its rows with it.
ACCEPTED_AT = "lifecycle_accepted_at"

Progress = Callable[[int], None]


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(
            f"batch file '{path.name}': unsupported type; expected one of {', '.join(FORMATS)}"
        )
    return fmt


def accepted_header() -> dict[str, str]:
    """The header of a file task whose id the server generated (ACCEPTED_AT)."""
    return {ACCEPTED_AT: datetime.now(UTC).isoformat()}


def accepted_at(request: Any) -> datetime | None:
    """A file task's accepted time from its message (Celery puts the message's headers on the
    task request), or None: a task sent by an earlier API, or for a client's own id."""
    value = getattr(request, ACCEPTED_AT, None)
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        log.warning("ignoring a malformed %s header: %r", ACCEPTED_AT, value)
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def default_output(settings: Settings, task_id: str, fmt: str) -> Path:
    return settings.resolved_batch_dir() / "out" / f"{task_id}.scored.{fmt}"


def score_file(
    runtime: Runtime,
    task_id: str,
    input_path: str,
    output_path: str | None = None,
    source: str = "batch",
    progress: Progress | None = None,
    accepted_at: datetime | None = None,
) -> dict[str, Any]:
    """Score a CSV or Parquet file chunk by chunk into a file of the same type.

    The output holds the input rows plus request_id, prediction, label, probability and
    model_version. It is written to `<output>.partial` and renamed at the end, so a reader never
    sees half a file, and a redelivered task simply starts again. One model snapshot scores the
    whole file, so every row names the same version. `progress` hears the rows done after
    each chunk is stored and written. `accepted_at`, the job's accepted time, stamps every
    stored row (batch_columns.infer_columns), so a delivery of the job scored again stores
    nothing twice without the prediction log looking its request ids up.
    """
    with storable_failures(task_id):
        return _score_file(runtime, task_id, input_path, output_path, source, progress, accepted_at)


def _score_file(
    runtime: Runtime,
    task_id: str,
    input_path: str,
    output_path: str | None,
    source: str,
    progress: Progress | None,
    accepted_at: datetime | None,
) -> dict[str, Any]:
    source_path = Path(input_path).expanduser()
    fmt = file_format(source_path)
    if not source_path.is_file():
        raise InvalidInput(f"batch file '{source_path}' does not exist on the worker")
    target = Path(output_path) if output_path else default_output(runtime.settings, task_id, fmt)
    out_fmt = file_format(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    model = runtime.model()
    batch_arrow.check_columns(source_path, fmt, model.schema)
    job = _Job(runtime, model, task_id, source, progress, target, out_fmt, accepted_at)
    started = time.perf_counter()
    try:
        n = job.run(source_path, fmt, text=False)
    except batch_arrow.TypesChanged as exc:
        # Chunks stored before the odd cell keep their request ids: storing them again is a no-op.
        log.info("batch %s: reading %s again as text (%s)", task_id, source_path.name, exc)
        n = job.run(source_path, fmt, text=True)
    if n == 0:
        job.partial.unlink(missing_ok=True)
        raise InvalidInput(f"batch file '{source_path.name}' has no rows")
    os.replace(job.partial, target)
    seconds = time.perf_counter() - started
    log.info("batch %s: %d rows scored by v%s in %.1fs", task_id, n, model.version, seconds)
    return {
        "task_id": task_id,
        "input": str(source_path),
        "output": str(target),
        "format": out_fmt,
        "rows": n,
        "seconds": round(seconds, 3),
        "model": model.describe(),
    }


class _Job:
    """One file's chunks: scored, stored and written to `<output>.partial`."""

    def __init__(
        self,
        runtime: Runtime,
        model: LoadedModel,
        task_id: str,
        source: str,
        progress: Progress | None,
        target: Path,
        out_fmt: str,
        accepted_at: datetime | None,
    ) -> None:
        self.runtime, self.model, self.task_id = runtime, model, task_id
        self.source, self.progress, self.out_fmt = source, progress, out_fmt
        self.accepted_at = accepted_at
        self.partial = target.with_name(target.name + ".partial")

    def run(self, path: Path, fmt: str, text: bool) -> int:
        """The rows done; a failure leaves no partial file behind.

        A chunk is stored by a second thread while the next one is read and scored (the
        database driver waits without the GIL), one chunk at a time: chunk k + 1 is handed
        over only once chunk k is stored, and progress counts stored chunks only.
        """
        n = 0
        writer = batch_arrow.Writer(self.partial, self.out_fmt)
        storing: Future[int] | None = None
        done = 0
        with ThreadPoolExecutor(1, thread_name_prefix="batch-store") as pool:
            try:
                chunk_rows = self.runtime.settings.batch_chunk_rows
                for table in batch_arrow.chunks(path, fmt, chunk_rows, self.model.schema, text):
                    scored, out = score_table(
                        self.model, table, self.task_id, n, self.source, self.accepted_at
                    )
                    if storing is not None:
                        storing.result()
                        self._stored(done)
                    storing = pool.submit(self.runtime.store.write_columns, scored.columns)
                    self._count(scored)
                    writer.write(out)
                    n += table.num_rows
                    done = n
                if storing is not None:
                    storing.result()
                    self._stored(done)
                writer.close()
            except BaseException:
                writer.close()
                self.partial.unlink(missing_ok=True)
                raise
        return n

    def _stored(self, rows: int) -> None:
        if self.progress is not None:
            self.progress(rows)

    def _count(self, scored: batch_columns.ScoredChunk) -> None:
        labels = batch_columns.label_counts(np.asarray(scored.columns.labels))
        for label, count in labels.items():
            self.runtime.metrics.predictions.labels(self.model.name, self.model.version, label).inc(
                count
            )


def progress_rows(state: str, meta: Any) -> int | None:
    """The rows a running file task has reported, from its Celery state and metadata."""
    if state != PROGRESS_STATE or not isinstance(meta, dict):
        return None
    rows = meta.get("rows")
    return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 else None


def score_table(
    model: LoadedModel,
    table: Any,
    task_id: str,
    offset: int,
    source: str,
    accepted_at: datetime | None = None,
) -> tuple[batch_columns.ScoredChunk, Any]:
    """One chunk (an Arrow table): checked rows → one model call → the predictions as
    columns for the store, and the chunk with its new columns for the output file."""
    import pyarrow as pa

    started = time.perf_counter()
    rows = validation.frame_rows(_features(table, model.schema), model.schema, offset)
    ids = batch_columns.row_ids(task_id, offset, len(rows))
    numbered = (batch_columns.row_prefix(task_id), offset)
    scored = batch_columns.infer_columns(
        model, rows, ids, source, started, offset, accepted_at, numbered
    )
    added = {
        "request_id": ids,
        "prediction": pa.array(scored.columns.predictions),
        "label": pa.array(scored.columns.labels, pa.string()),
        "probability": pa.array(scored.probability, pa.float64()),
        "model_version": pa.repeat(pa.scalar(model.version), len(rows)),
    }
    for name, column in added.items():
        if name in table.column_names:  # a scored file scored again: its old answers go
            table = table.drop_columns([name])
        table = table.append_column(name, column)
    return scored, table


def _features(table: Any, schema: FeatureSchema) -> pd.DataFrame:
    """The chunk's feature columns as the validator takes them: doubles where Arrow converts
    every cell, else the text as pandas reads it (so the bad cell is worded, not the column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    frame: dict[str, Any] = {}
    for feature in schema.features:
        if feature.name not in table.column_names:
            continue  # the validator names what is missing
        column = table.column(feature.name)
        if feature.kind == "numeric" and pa.types.is_string(column.type):
            try:
                column = pc.cast(column, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                text = pd.DataFrame({feature.name: column.to_pandas()})
                frame[feature.name] = _numbers_from_text(text)[feature.name]
                continue
        frame[feature.name] = column.to_pandas()
    return pd.DataFrame(frame, index=pd.RangeIndex(table.num_rows))


def _numbers_from_text(chunk: pd.DataFrame) -> pd.DataFrame:
    """CSV is text: where one cell of a column is not a number pandas keeps them all as
    strings; turn back the ones that are numbers, so the validator words only the bad cell."""
    for name in chunk.columns:
        col = chunk[name]
        if col.dtype == object:
            numbers = pd.to_numeric(col, errors="coerce")
            if numbers.notna().any():
                chunk[name] = col.where(numbers.isna(), numbers).astype(object)
    return chunk

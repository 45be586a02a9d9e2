"""Batch files: a CSV or Parquet file scored chunk by chunk into a file of the same type.

Each chunk is checked by the same validator as a JSON body (`validation.frame_rows`), scored
by `serving.inference.infer` and stored before the next is read.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.core.settings import Settings
from serving import validation
from serving.async_scoring import storable_failures
from serving.inference import InferenceRequest, infer
from serving.runtime import LoadedModel
from serving.validation import InvalidInput
from serving.wiring import Runtime

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# The Celery state a running file task reports after each chunk, with {"rows": n}.
PROGRESS_STATE = "PROGRESS"

Progress = Callable[[int], None]


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(
            f"batch file '{path.name}': unsupported type; expected one of {', '.join(FORMATS)}"
        )
    return fmt


def default_output(settings: Settings, task_id: str, fmt: str) -> Path:
    return settings.resolved_batch_dir() / "out" / f"{task_id}.scored.{fmt}"


def score_file(
    runtime: Runtime,
    task_id: str,
    input_path: str,
    output_path: str | None = None,
    source: str = "batch",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Score a CSV or Parquet file chunk by chunk into a file of the same type.

    The output holds the input rows plus request_id, prediction, label, probability and
    model_version. It is written to `<output>.partial` and renamed at the end, so a reader never
    sees half a file, and a redelivered task simply starts again. One model snapshot scores the
    whole file, so every row names the same version. `progress` hears the rows done after
    each chunk is stored and written.
    """
    with storable_failures(task_id):
        return _score_file(runtime, task_id, input_path, output_path, source, progress)


def _score_file(
    runtime: Runtime,
    task_id: str,
    input_path: str,
    output_path: str | None,
    source: str,
    progress: Progress | None,
) -> dict[str, Any]:
    source_path = Path(input_path).expanduser()
    fmt = file_format(source_path)
    if not source_path.is_file():
        raise InvalidInput(f"batch file '{source_path}' does not exist on the worker")
    target = Path(output_path) if output_path else default_output(runtime.settings, task_id, fmt)
    out_fmt = file_format(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    model = runtime.model()
    chunk_rows = runtime.settings.batch_chunk_rows
    started = time.perf_counter()
    n = 0
    writer = _writer(out_fmt, partial)
    try:
        for frame in _chunks(source_path, fmt, chunk_rows):
            out = score_frame(runtime, model, frame, task_id, n, source)
            writer.write(out)
            n += len(frame)
            if progress is not None:
                progress(n)
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    if n == 0:
        partial.unlink(missing_ok=True)
        raise InvalidInput(f"batch file '{source_path.name}' has no rows")
    os.replace(partial, target)
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


def progress_rows(state: str, meta: Any) -> int | None:
    """The rows a running file task has reported, from its Celery state and metadata."""
    if state != PROGRESS_STATE or not isinstance(meta, dict):
        return None
    rows = meta.get("rows")
    return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 else None


def score_frame(
    runtime: Runtime,
    model: LoadedModel,
    frame: pd.DataFrame,
    task_id: str,
    offset: int,
    source: str,
) -> pd.DataFrame:
    """One chunk: checked rows → `infer` → stored → the chunk with its new columns."""
    started = time.perf_counter()
    rows = validation.frame_rows(frame, model.schema, offset)
    ids = [f"{task_id}-{offset + i}" for i in range(len(rows))]
    request = InferenceRequest(
        rows, task_id, source, ids, started=started, per_row=True, offset=offset
    )
    result = infer(model, request)
    runtime.store.write(result.records)
    runtime.observe(result)
    out = frame.copy()
    out["request_id"] = ids
    out["prediction"] = result.predictions
    out["label"] = result.labels
    out["probability"] = (
        [max(p.values()) for p in result.probabilities] if result.probabilities else np.nan
    )
    out["model_version"] = model.version
    return out


def _chunks(path: Path, fmt: str, rows: int) -> Iterator[pd.DataFrame]:
    if fmt == "csv":
        with pd.read_csv(path, chunksize=rows) as reader:
            for chunk in reader:
                yield _numbers_from_text(chunk)
        return
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    try:
        for batch in parquet.iter_batches(batch_size=rows):
            yield batch.to_pandas()
    finally:
        parquet.close()


class _Writer:
    def write(self, frame: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _CsvWriter(_Writer):
    def __init__(self, path: Path) -> None:
        self._file = path.open("w", newline="")
        self._header = True

    def write(self, frame: Any) -> None:
        frame.to_csv(self._file, header=self._header, index=False)
        self._header = False

    def close(self) -> None:
        self._file.close()


class _ParquetWriter(_Writer):
    """Appends one row group per chunk; later chunks are cast to the first chunk's schema."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer: Any = None

    def write(self, frame: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._path, table.schema)
        else:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _writer(fmt: str, path: Path) -> _Writer:
    return _CsvWriter(path) if fmt == "csv" else _ParquetWriter(path)


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

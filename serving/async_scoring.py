"""Async and batch scoring as plain functions: the Celery tasks and the plain-AMQP consumer
only add transport, serialisation and retries around them.

Everything scores through the same `ModelHolder` (following the registry through the same
`Reconciler`) and the same `lifecycle.scoring` functions as the REST API, and stores through
`PredictionStore.write`, which is synchronous and idempotent on request id: a redelivered task
recomputes its rows and the store skips those it already holds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lifecycle import scoring
from lifecycle.errors import LifecycleError
from lifecycle.model import (
    LoadedModel,
    ModelHolder,
    ModelUnavailable,
    Reconciler,
    RegistryUnavailable,
)
from lifecycle.schema import FeatureSchema
from lifecycle.settings import Settings
from lifecycle.store import PredictionStore, StoreUnavailable

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
OUTPUT_COLUMNS = ("request_id", "prediction", "label", "probability", "model_version")


# Worth retrying with backoff: the database, the registry, or no model loaded yet.
TRANSIENT: tuple[type[Exception], ...] = (StoreUnavailable, RegistryUnavailable, ModelUnavailable)


class BatchFileError(LifecycleError):
    status_code = 422


@dataclass
class Runtime:
    """One process's scoring collaborators: the holder that follows the registry, and the store."""

    settings: Settings
    holder: ModelHolder
    reconciler: Reconciler
    store: PredictionStore

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        holder = ModelHolder.from_settings(settings)
        return cls(
            settings,
            holder,
            Reconciler(holder, settings.poll_interval),
            PredictionStore.from_settings(settings),
        )

    def start(self) -> None:
        # Only the reconciler runs in the background: writes are synchronous (store.write), so
        # a task is acknowledged only after its predictions are in the database.
        self.reconciler.start()

    def stop(self) -> None:
        self.reconciler.stop()

    def model(self) -> LoadedModel:
        """The current model; before the first load, try one now instead of failing at once.

        The holder's lock makes a concurrent reconcile wait and then find the model loaded.
        ModelUnavailable (no version, registry down) is left to the caller's retry policy.
        """
        if self.holder.current is None:
            self.holder.reconcile()
        return self.holder.get()


class RuntimeCell:
    """A lazily built Runtime per process: prefork children build their own after the fork."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._runtime: Runtime | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> Runtime:
        with self._lock:
            if self._runtime is None or self._pid != os.getpid():
                runtime = Runtime.from_settings(self._settings)
                runtime.start()
                self._runtime, self._pid = runtime, os.getpid()
            return self._runtime

    def stop(self) -> None:
        with self._lock:
            if self._runtime is not None and self._pid == os.getpid():
                self._runtime.stop()
            self._runtime = None


def score_request(
    runtime: Runtime, request_id: str, body: Any, source: str = "async"
) -> dict[str, Any]:
    """Score a /predict body, store every row, and answer like /predict does."""
    started = time.perf_counter()
    model = runtime.model()
    rows = scoring.parse_predict(body, model.schema, runtime.settings.max_batch_rows)
    scored = scoring.score(model, rows)
    ids = scoring.row_ids(request_id, len(rows))
    now = datetime.now(UTC)
    latency_ms = (time.perf_counter() - started) * 1000
    runtime.store.write(scoring.records(model, rows, scored, ids, source, now, latency_ms))
    return scoring.predict_response(model, rows, scored, request_id, ids, now)


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BatchFileError(
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
) -> dict[str, Any]:
    """Score a CSV or Parquet file chunk by chunk into a file of the same type.

    The output holds the input rows plus request_id, prediction, label, probability and
    model_version. It is written to `<output>.partial` and renamed at the end, so a reader never
    sees half a file, and a redelivered task simply starts again. One model snapshot scores the
    whole file, so every row names the same version.
    """
    source_path = Path(input_path).expanduser()
    fmt = file_format(source_path)
    if not source_path.is_file():
        raise BatchFileError(f"batch file '{source_path}' does not exist on the worker")
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
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    if n == 0:
        partial.unlink(missing_ok=True)
        raise BatchFileError(f"batch file '{source_path.name}' has no rows")
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


def score_frame(
    runtime: Runtime,
    model: LoadedModel,
    frame: Any,
    task_id: str,
    offset: int,
    source: str,
) -> Any:
    """One chunk: checked matrix → predictions → stored → the chunk with its new columns."""
    started = time.perf_counter()
    X = frame_matrix(frame, model.schema, offset)
    rows = scoring.Rows(X, batch=True)
    scored = scoring.score(model, rows)
    ids = [f"{task_id}-{offset + i}" for i in range(len(rows))]
    latency_ms = (time.perf_counter() - started) * 1000 / max(len(rows), 1)
    now = datetime.now(UTC)
    runtime.store.write(scoring.records(model, rows, scored, ids, source, now, latency_ms))
    out = frame.copy()
    out["request_id"] = ids
    out["prediction"] = scored.predictions
    out["label"] = scored.labels
    out["probability"] = (
        [max(p.values()) for p in scored.probabilities] if scored.probabilities else np.nan
    )
    out["model_version"] = model.version
    return out


def frame_matrix(frame: Any, schema: FeatureSchema, offset: int) -> np.ndarray:
    """The chunk's feature columns in schema order, checked like a /predict body."""
    import pandas as pd

    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise BatchFileError(
            f"batch file: missing feature column(s) {', '.join(map(repr, missing))}; "
            f"expected {', '.join(map(repr, schema.names))}"
        )
    columns = []
    for feature in schema.features:
        col = frame[feature.name]
        if feature.kind == "numeric":
            values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                i = int(np.argmax(bad))
                raise BatchFileError(
                    f"batch file row {offset + i}: feature '{feature.name}' must be a finite "
                    f"number, got {col.iloc[i]!r}"
                )
            columns.append(values)
        else:
            columns.append(np.array([None if pd.isna(v) else str(v) for v in col], dtype=object))
    dtype = np.float64 if not schema.categorical else object
    return np.column_stack(columns).astype(dtype, copy=False)


def _chunks(path: Path, fmt: str, rows: int) -> Iterator[Any]:
    if fmt == "csv":
        import pandas as pd

        with pd.read_csv(path, chunksize=rows) as reader:
            yield from reader
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

"""Batch files read and written with Arrow: CSV and Parquet streamed in chunks of rows.

The reader yields Arrow tables of exactly `rows` rows (the last one shorter), whatever blocks
or row groups the file holds, so a chunk is the unit of scoring, storing and progress. A CSV
is read with typed columns, numeric features as doubles; a file where that fails (a cell that
is not a number, a column whose type changes after the first block) is read again with every
column as text, so that the validator words the bad cell exactly as it words a JSON body, and
text columns pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lifecycle.core.schema import FeatureSchema
from serving.validation import InvalidInput, check_names

# Bytes Arrow parses per CSV block: large enough for its threads, small next to a chunk.
CSV_BLOCK_BYTES = 4 << 20


class TypesChanged(Exception):
    """A typed CSV read met a cell of another type: read the file again as text."""


def column_names(path: Path, fmt: str) -> list[str]:
    """The file's column names, read from its header or its Parquet schema."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            return list(pq.read_schema(path).names)
        with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)) as reader:
            return list(reader.schema.names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"batch file '{path.name}' is not a readable {fmt} file: {exc}") from exc


def check_columns(path: Path, fmt: str, schema: FeatureSchema) -> None:
    """Every feature is a column of the file (others pass through), or InvalidInput."""
    check_names(column_names(path, fmt), schema, "columns", extra_ok=True)


def chunks(path: Path, fmt: str, rows: int, schema: FeatureSchema, text: bool) -> Iterator[Any]:
    """Arrow tables of `rows` rows. `text` reads a CSV with every column as text; a typed
    read raises TypesChanged where a cell does not fit its column's type."""
    import pyarrow as pa

    try:
        if fmt == "parquet":
            yield from _rechunk(_parquet_batches(path, rows), rows)
        else:
            yield from _rechunk(_csv_batches(path, schema, text), rows)
    except pa.ArrowInvalid as exc:
        if fmt == "csv" and not text and "conversion error" in str(exc).lower():
            raise TypesChanged(str(exc)) from exc
        raise InvalidInput(f"batch file '{path.name}': {exc}") from exc


def _csv_batches(path: Path, schema: FeatureSchema, text: bool) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = column_names(path, "csv")
    if text:
        types = {name: pa.string() for name in names}
    else:
        types = {f.name: pa.float64() for f in schema.features if f.kind == "numeric"}
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    with pacsv.open_csv(path, read_options=read, convert_options=convert) as reader:
        yield from reader


def _parquet_batches(path: Path, rows: int) -> Iterator[Any]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    try:
        yield from parquet.iter_batches(batch_size=rows)
    finally:
        parquet.close()


def _rechunk(batches: Iterator[Any], rows: int) -> Iterator[Any]:
    import pyarrow as pa

    pending: list[Any] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


class Writer:
    """An output file written chunk by chunk; later chunks take the first chunk's schema."""

    def __init__(self, path: Path, fmt: str) -> None:
        self._path = path
        self._fmt = fmt
        self._writer: Any = None
        self._schema: Any = None

    def write(self, table: Any) -> None:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        if self._writer is None:
            if self._fmt == "csv":
                self._writer = pacsv.CSVWriter(self._path, table.schema)
            else:
                self._writer = pq.ParquetWriter(self._path, table.schema)
            self._schema = table.schema
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

"""Batch files through Arrow: the same file as CSV and as Parquet gives the same output and the
same stored predictions (PostgreSQL, the columnar COPY path), and a CSV whose column changes
type after the first block is read again as text rather than failing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from lifecycle.core.settings import Settings
from serving import batch_arrow
from serving.batch_files import score_file
from serving.inference import InferenceRequest, infer
from serving.validation import frame_rows
from serving.wiring import Runtime
from tests.support.fixed_model import fixed_runtime
from tests.support.services import temp_database

pytestmark = pytest.mark.postgres

ADDED = ["request_id", "prediction", "label", "probability", "model_version"]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with temp_database("lc_batch_arrow") as url:
        settings = Settings(data_dir=tmp_path / "data", database_url=url, batch_chunk_rows=16)
        runtime = fixed_runtime(settings)
        yield runtime
        runtime.store.stop(timeout=2)


def _frame(n: int, names: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal([5.8, 3.0, 3.7, 1.2], 0.8, size=(n, 4)).round(2), columns=names)
    frame.insert(0, "id", [f"row{i}" for i in range(n)])
    frame[names[1]] = frame[names[1]].astype(float)
    frame.loc[3, names[1]] = 4.0  # an integral value
    return frame


def _stored(runtime: Runtime, task: str) -> pd.DataFrame:
    engine = sa.create_engine(str(runtime.settings.database_url))
    sql = (
        "SELECT request_id, features::text AS features, prediction::text AS prediction, label, "
        "probabilities::text AS probabilities, model_version, source FROM prediction_rows "
        "WHERE request_id LIKE :p"
    )
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(sa.text(sql), conn, params={"p": f"{task}-%"})
    finally:
        engine.dispose()
    frame["row"] = frame.pop("request_id").str.rsplit("-", n=1).str[1].astype(int)
    return frame.sort_values("row").reset_index(drop=True)


def test_csv_and_parquet_give_the_same_output_and_stored_rows(
    runtime: Runtime, tmp_path: Path
) -> None:
    model = runtime.holder.get()
    names = list(model.schema.names)
    frame = _frame(70, names)
    csv, parquet = tmp_path / "in.csv", tmp_path / "in.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)

    from_csv = score_file(runtime, "tcsv", str(csv))
    from_parquet = score_file(runtime, "tpq", str(parquet))

    out_csv = pd.read_csv(from_csv["output"])
    out_parquet = pd.read_parquet(from_parquet["output"])
    assert list(out_csv.columns) == list(out_parquet.columns) == ["id", *names, *ADDED]
    assert out_csv["request_id"].tolist() == [f"tcsv-{i}" for i in range(70)]
    assert out_parquet["request_id"].tolist() == [f"tpq-{i}" for i in range(70)]
    # CSV is text: the version "7" reads back as a number.
    out_csv["model_version"] = out_csv["model_version"].astype(str)
    pd.testing.assert_frame_equal(
        out_csv.drop(columns="request_id"),
        out_parquet.drop(columns="request_id"),
        check_dtype=False,
    )

    stored_csv, stored_parquet = _stored(runtime, "tcsv"), _stored(runtime, "tpq")
    assert len(stored_csv) == 70 and stored_csv["row"].tolist() == list(range(70))
    pd.testing.assert_frame_equal(stored_csv, stored_parquet)
    # The file path stores what /predict's path (infer, one record per row) would store.
    rows = frame_rows(frame, model.schema)
    result = infer(model, InferenceRequest(rows, "x", "batch", [f"x-{i}" for i in range(70)]))
    assert [r.label for r in result.records] == stored_csv["label"].tolist()
    assert out_csv["label"].tolist() == stored_csv["label"].tolist()
    assert stored_csv.loc[3, "features"].count("4.0") == 1  # stored as the row path does

    # A rerun of the same task id stores nothing new.
    score_file(runtime, "tcsv", str(csv))
    assert len(_stored(runtime, "tcsv")) == 70


def test_a_column_that_changes_type_after_the_first_block_is_read_as_text(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = list(runtime.holder.get().schema.names)
    frame = _frame(60, names)
    frame["note"] = [str(i) for i in range(50)] + ["n/a-later"] * 10
    source = tmp_path / "mixed.csv"
    frame.to_csv(source, index=False)
    # Small blocks, so that Arrow fixes the column's type before it meets the text.
    monkeypatch.setattr(batch_arrow, "CSV_BLOCK_BYTES", 512)

    result = score_file(runtime, "mixed", str(source))

    out = pd.read_csv(result["output"], dtype={"note": str})
    assert result["rows"] == 60 and out["note"].tolist() == frame["note"].tolist()
    assert len(_stored(runtime, "mixed")) == 60

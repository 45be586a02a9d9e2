"""The Spark batch job scores a file with the served version, as the REST path would.

The session's shared stack (MLflow on PostgreSQL, `lifecycle serve`, the prediction store on
PostgreSQL) serves iris in Production; one local SparkSession scores generated iris files
split into several partitions, so row numbers cross partition boundaries. The job's stored
records and its output file are compared with `/predict`'s answers for the same rows.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from pyspark.sql import SparkSession

from serving.spark_job import SparkJob, run_job, spark_session
from serving.spark_partition import OUTPUT_COLUMNS
from serving.validation import InvalidInput
from tests.support.cli import assert_one_line_error, cli_env, run_cli
from tests.support.services import _unavailable
from tests.support.stack import FEATURES, Stack, iris_frame

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def stack(shared_stack: Stack) -> Stack:
    return shared_stack


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    if shutil.which("java") is None:
        _unavailable("the Spark job's tests need a Java 17 runtime (openjdk-17-jre-headless)")
    session = spark_session("local[2]")
    # Small splits: a file of a few KB is read as several partitions. Few shuffle partitions:
    # the row count per partition is a tiny aggregate.
    session.conf.set("spark.sql.files.maxPartitionBytes", "1024")
    session.conf.set("spark.sql.files.openCostInBytes", "0")
    session.conf.set("spark.sql.shuffle.partitions", "2")
    yield session
    session.stop()


def _job_id() -> str:
    return f"spark-test-{uuid.uuid4().hex[:8]}"


def _stored(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    sql = sa.text(
        "SELECT request_id, source, model_name, model_version, run_id, features, prediction, "
        "label, probabilities FROM prediction_rows WHERE request_id LIKE :p"
    )
    with stack.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sql, {"p": f"{job_id}-%"})]
    for row in rows:
        for key in ("features", "prediction", "probabilities"):
            if isinstance(row[key], str):
                row[key] = json.loads(row[key])
    return sorted(rows, key=lambda r: int(str(r["request_id"]).rsplit("-", 1)[1]))


def _rest(stack: Stack, frame: pd.DataFrame) -> dict[str, Any]:
    with stack.client() as client:
        response = client.post("/predict", json={"instances": frame[FEATURES].values.tolist()})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _read_output(path: Path, fmt: str) -> pd.DataFrame:
    assert (path / "_SUCCESS").exists(), sorted(p.name for p in path.iterdir())
    parts = sorted(path.glob(f"part-*.{fmt}")) if fmt == "csv" else sorted(path.glob("part-*"))
    assert parts, f"no part files in {path}"
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    frame = pd.concat([read(p) for p in parts], ignore_index=True)
    return frame.sort_values(
        "request_id", key=lambda s: s.str.rsplit("-", n=1).str[1].astype(int)
    ).reset_index(drop=True)


def test_spark_job_answers_like_rest_and_stores_each_row_once(
    stack: Stack, spark: SparkSession, tmp_path: Path
) -> None:
    frame = iris_frame(60, seed=12)
    frame.insert(0, "sample", [f"s{i}" for i in range(len(frame))])
    source = tmp_path / "iris.csv"
    frame.to_csv(source, index=False)
    job = SparkJob.plan(stack.settings, str(source), str(tmp_path / "scored.csv"), _job_id())
    # Row numbers must run on across partition boundaries.
    assert spark.read.csv(str(source), header=True).rdd.getNumPartitions() > 1

    summary = run_job(stack.settings, job, spark)

    rest = _rest(stack, frame)
    assert summary["rows"] == summary["stored"] == len(frame)
    assert summary["model"]["version"] == rest["model"]["version"]
    stored = _stored(stack, job.job_id)
    assert [r["request_id"] for r in stored] == [f"{job.job_id}-{i}" for i in range(len(frame))]
    for i, (record, answer) in enumerate(zip(stored, rest["predictions"], strict=True)):
        assert record["source"] == "batch"
        assert record["model_name"] == stack.name
        assert record["model_version"] == rest["model"]["version"]
        assert record["run_id"] == rest["model"]["run_id"]
        assert record["features"] == dict(zip(FEATURES, frame.loc[i, FEATURES], strict=True))
        assert record["prediction"] == answer["prediction"]
        assert record["label"] == answer["label"]
        assert record["probabilities"].keys() == answer["probabilities"].keys()
        for name, p in answer["probabilities"].items():
            assert record["probabilities"][name] == pytest.approx(p, abs=1e-9)

    out = _read_output(job.output, "csv")
    assert list(out.columns) == [*frame.columns, *OUTPUT_COLUMNS]
    assert out["sample"].tolist() == frame["sample"].tolist()
    assert out["prediction"].tolist() == [a["prediction"] for a in rest["predictions"]]
    assert out["label"].tolist() == [a["label"] for a in rest["predictions"]]
    best = [max(a["probabilities"].values()) for a in rest["predictions"]]
    assert out["probability"].tolist() == pytest.approx(best, abs=1e-9)
    assert set(out["model_version"].astype(str)) == {rest["model"]["version"]}

    # The same job again, as a user reruns it: every row scored, none stored twice.
    rerun = run_cli(
        "spark-score",
        str(source),
        "--output",
        str(job.output),
        "--job-id",
        job.job_id,
        "--master",
        "local[1]",
        env=cli_env(stack.settings, LIFECYCLE_MODEL_NAME=stack.name),
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    again = json.loads(rerun.stdout[rerun.stdout.index("{") :])
    assert again["rows"] == len(frame)
    assert again["stored"] == 0
    assert again["model"]["version"] == rest["model"]["version"]
    assert len(_stored(stack, job.job_id)) == len(frame)
    assert len(_read_output(job.output, "csv")) == len(frame)


def test_parquet_in_parquet_out(stack: Stack, spark: SparkSession, tmp_path: Path) -> None:
    frame = iris_frame(25, seed=3)
    source = tmp_path / "iris.parquet"
    frame.to_parquet(source, index=False)
    job = SparkJob.plan(stack.settings, str(source), str(tmp_path / "out.parquet"), _job_id())

    summary = run_job(stack.settings, job, spark)

    rest = _rest(stack, frame)
    assert summary["stored"] == len(frame)
    out = _read_output(job.output, "parquet")
    assert list(out.columns) == [*FEATURES, *OUTPUT_COLUMNS]
    assert out["request_id"].tolist() == [f"{job.job_id}-{i}" for i in range(len(frame))]
    assert out["label"].tolist() == [a["label"] for a in rest["predictions"]]
    assert out["prediction"].tolist() == [a["prediction"] for a in rest["predictions"]]


def test_bad_cell_is_named_and_nothing_is_stored(
    stack: Stack, spark: SparkSession, tmp_path: Path
) -> None:
    frame = iris_frame(30, seed=5).astype(object)
    frame.loc[17, "sepal width (cm)"] = "abc"
    source = tmp_path / "bad.csv"
    frame.to_csv(source, index=False)
    job = SparkJob.plan(stack.settings, str(source), str(tmp_path / "out.csv"), _job_id())

    with pytest.raises(InvalidInput) as raised:
        run_job(stack.settings, job, spark)

    assert raised.value.message == "row 17: feature 'sepal width (cm)' must be a number, got 'abc'"
    assert _stored(stack, job.job_id) == []
    assert not job.output.exists()


def test_missing_feature_column_is_named_and_nothing_is_stored(
    stack: Stack, spark: SparkSession, tmp_path: Path
) -> None:
    source = tmp_path / "narrow.csv"
    iris_frame(5).drop(columns=["petal width (cm)"]).to_csv(source, index=False)
    job = SparkJob.plan(stack.settings, str(source), str(tmp_path / "out.csv"), _job_id())

    with pytest.raises(
        InvalidInput, match=r"narrow.csv: columns: missing feature\(s\) 'petal width \(cm\)'"
    ):
        run_job(stack.settings, job, spark)

    assert _stored(stack, job.job_id) == []


@pytest.mark.parametrize(
    ("name", "job_id", "fragment"),
    [
        ("absent.csv", "j1", "input file '{dir}/absent.csv' does not exist"),
        ("rows.txt", "j1", "batch file 'rows.txt': unsupported type"),
        ("rows.csv", "no spaces", "--job-id 'no spaces': use 1-100 letters"),
    ],
)
def test_plan_refuses_bad_arguments_before_spark_starts(
    stack: Stack, tmp_path: Path, name: str, job_id: str, fragment: str
) -> None:
    path = tmp_path / name
    if name != "absent.csv":
        path.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInput) as raised:
        SparkJob.plan(stack.settings, str(path), None, job_id)
    assert fragment.format(dir=tmp_path) in raised.value.message


def test_cli_names_the_missing_file(stack: Stack, tmp_path: Path) -> None:
    env = cli_env(stack.settings, LIFECYCLE_MODEL_NAME=stack.name)
    missing = tmp_path / "absent.csv"
    result = run_cli("spark-score", str(missing), "--job-id", "cli-bad", env=env, timeout=120)
    assert_one_line_error(result, f"input file '{missing}' does not exist")
    assert _stored(stack, "cli-bad") == []

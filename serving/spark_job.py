"""The Spark batch job: a file too large for one worker, scored by the served version.

`lifecycle spark-score INPUT` resolves what the API serves the way the API does
(`ModelTarget.from_settings` → `MlflowRegistryProbe.resolve`, then `load_version`, which
smoke-tests it and gives the class labels), pins that version for the whole job, and scores
the file with `mlflow.pyfunc.spark_udf` on it. Each row's prediction is stored in the
prediction store with the version, its run id, source "batch" and the request id
`<job id>-<row number>`, and the scored rows are written with the columns /batch adds.

Where the records are written: on the executors. `serving.spark_partition.StorePartition`
runs inside `mapInPandas`, so each executor writes its own partitions over its own database
connection while it scores them, in parallel, and no row ever travels to the driver; writing
from the driver would funnel every row of a file "too large for one worker" through one
process, the bottleneck the job exists to remove. The store skips request ids it holds, so a
task Spark retries, a speculative copy, or a rerun of the same job id stores nothing twice.
What bounds the job is then the database's write rate: the number of partitions scored at
once (cores) is how to trade job time against load on it.

Row numbers are positions in the file, counted from 0 as /batch counts them: a first pass
counts the rows of each input partition (and finds the first bad cell, so a bad file stores
nothing), and each row's number is its partition's offset plus its place in the partition.
The same file gives the same numbers however Spark splits it, so a rerun writes the same ids.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.models import Model

from lifecycle.core import mlflow_gateway
from lifecycle.core.errors import ConfigError
from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionStore
from serving import predictors, validation
from serving.batch_files import _numbers_from_text, default_output, file_format
from serving.runtime import LoadedModel, ModelUnavailable
from serving.runtime.loader import load_version
from serving.runtime.probe import MlflowRegistryProbe
from serving.runtime.target import ModelTarget
from serving.spark_partition import (
    OUTPUT_COLUMNS,
    PROBS,
    ROW,
    ServedVersion,
    StorePartition,
    feature_column,
    prediction_type,
)
from serving.validation import InvalidInput

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
# Internal columns: partition and the id Spark gives a row inside it.
_PART = "__lifecycle_partition"
_MONO = "__lifecycle_id"
_BAD = "__lifecycle_bad"
# monotonically_increasing_id puts the partition number above bit 33.
_PARTITION_SHIFT = 33


@dataclass(frozen=True)
class SparkJob:
    """One run: the input file, where the scored file goes and the job id rows are named by."""

    input: Path
    output: Path
    job_id: str

    @classmethod
    def plan(
        cls, settings: Settings, input_path: str, output: str | None, job_id: str | None
    ) -> SparkJob:
        """Check the arguments before anything starts: a bad one is a one-line error."""
        source = Path(input_path).expanduser()
        file_format(source)
        if not source.is_file():
            raise InvalidInput(f"input file '{source}' does not exist")
        job = job_id if job_id is not None else f"spark-{uuid.uuid4().hex[:12]}"
        if not _JOB_ID.fullmatch(job):
            raise InvalidInput(
                f"--job-id '{job}': use 1-100 letters, digits, '_', '.', ':' or '-', "
                "starting with a letter or digit"
            )
        target = (
            Path(output).expanduser() if output else default_output(settings, job, _fmt(source))
        )
        file_format(target)
        if target.resolve() == source.resolve():
            raise InvalidInput(f"--output '{target}' is the input file")
        return cls(source.resolve(), target.resolve(), job)

    @property
    def input_format(self) -> str:
        return _fmt(self.input)

    @property
    def output_format(self) -> str:
        return _fmt(self.output)


def spark_session(master: str) -> SparkSession:
    """A SparkSession for the job: no web UI, Arrow transfers, workers in this virtualenv."""
    from pyspark.sql import SparkSession

    # Python workers must import this project and its model libraries: run this interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master(master)
        .appName("lifecycle-spark-score")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def run_job(settings: Settings, job: SparkJob, spark: SparkSession) -> dict[str, Any]:
    """Score the job's file with the served version; return what was done."""
    started = time.perf_counter()
    model = served_model(settings)
    served = served_version(model)
    check_store(settings, job)
    frame = read_input(spark, job)
    validation.check_names(frame.columns, model.schema, f"{job.input.name}: columns", True)
    numbered, rows = number_rows(frame, model)
    if rows == 0:
        raise InvalidInput(f"input file '{job.input.name}' has no rows")
    with udf_model(model) as local:
        scored = score(spark, numbered, model, local)
        inserted = spark.sparkContext.accumulator(0)
        keep = tuple(frame.columns)
        out = scored.mapInPandas(
            StorePartition(settings, served, job.job_id, keep, inserted),
            output_schema(scored, keep, served.classes),
        )
        write_output(out, job)
    seconds = time.perf_counter() - started
    log.info(
        "spark job %s: %d rows scored by v%s in %.1fs", job.job_id, rows, model.version, seconds
    )
    return {
        "job_id": job.job_id,
        "input": str(job.input),
        "output": str(job.output),
        "format": job.output_format,
        "rows": rows,
        "stored": int(inserted.value),
        "seconds": round(seconds, 3),
        "model": model.describe(),
    }


def served_model(settings: Settings) -> LoadedModel:
    """The version the API serves now, loaded and smoke-tested as the API loads it."""
    client = mlflow_gateway.connect(settings)
    target = ModelTarget.from_settings(settings)
    ref = MlflowRegistryProbe(client).resolve(target)
    if ref is None:
        raise ModelUnavailable(f"no version to serve: {target.describe()} points at none")
    return load_version(ref, target)


def served_version(model: LoadedModel) -> ServedVersion:
    predictor = model.predictor
    if not isinstance(predictor, predictors.SklearnPredictor) or predictor.proba is None:
        raise ConfigError(
            f"model {model.name} v{model.version}: the Spark job scores scikit-learn "
            "classifiers with class probabilities (predict_proba); this version has none"
        )
    return ServedVersion(
        name=model.name,
        version=model.version,
        run_id=model.run_id,
        features=tuple(model.schema.names),
        classes=tuple(predictor.classes),
        labels=dict(model.labels),
    )


def check_store(settings: Settings, job: SparkJob) -> None:
    """Fail before scoring when the prediction store is down (StoreUnavailable), not mid-job;
    this also creates its tables once, before the executors write."""
    store = PredictionStore.from_settings(settings)
    try:
        store.get(f"{job.job_id}-0")
    finally:
        store.stop()


def read_input(spark: SparkSession, job: SparkJob) -> DataFrame:
    path = str(job.input)
    if job.input_format == "csv":
        # Every cell as text: a cell that is not a number is reported, never guessed at.
        return spark.read.csv(path, header=True, inferSchema=False)
    return spark.read.parquet(path)


def number_rows(frame: DataFrame, model: LoadedModel) -> tuple[DataFrame, int]:
    """The frame with each row's number in the file and its checked features; the row count.

    One pass counts the rows of each partition and the first bad cell of each; a bad cell
    raises InvalidInput, worded by the one validator, before anything is scored or stored.
    """
    from pyspark.sql import functions as F

    schema = model.schema
    tagged = frame.withColumn(_PART, F.spark_partition_id()).withColumn(
        _MONO, F.monotonically_increasing_id()
    )
    local = F.col(_MONO) - F.shiftleft(F.col(_PART).cast("long"), _PARTITION_SHIFT)
    bad: Column = F.lit(False)
    for i, feature in enumerate(schema.features):
        value, refused = _checked(F.col(f"`{feature.name}`"), feature.kind, schema.accepts_missing)
        tagged = tagged.withColumn(feature_column(i), value)
        bad = bad | refused
    tagged = tagged.withColumn(_BAD, bad)
    per_partition = (
        tagged.groupBy(_PART)
        .agg(F.count(F.lit(1)).alias("n"), F.min(F.when(F.col(_BAD), local)).alias("first_bad"))
        .collect()
    )
    offsets: dict[int, int] = {}
    total = 0
    first_bad: tuple[int, int] | None = None
    for part in sorted(per_partition, key=lambda r: int(r[_PART])):
        offsets[int(part[_PART])] = total
        if part["first_bad"] is not None and first_bad is None:
            first_bad = (int(part[_PART]), int(part["first_bad"]))
        total += int(part["n"])
    if first_bad is not None:
        _report_bad_row(tagged, frame.columns, model, first_bad, offsets)
    if not offsets:
        return tagged, 0
    offset_of = F.create_map(*[F.lit(v) for kv in sorted(offsets.items()) for v in kv])
    numbered = tagged.withColumn(ROW, offset_of[F.col(_PART)] + local)
    return numbered.drop(_PART, _MONO, _BAD), total


def _checked(col: Column, kind: str, missing_ok: bool) -> tuple[Column, Column]:
    """A feature column as the model takes it, and which of its cells the validator refuses."""
    from pyspark.sql import functions as F

    if kind != "numeric":
        return col.cast("string"), F.lit(False)
    number = col.try_cast("double")
    not_a_number = col.isNotNull() & number.isNull()
    infinite = number.isin(float("inf"), float("-inf"))
    missing = col.isNull() | F.isnan(number)
    refused = not_a_number | infinite | (F.lit(not missing_ok) & missing)
    return number, F.coalesce(refused, F.lit(False))


def _report_bad_row(
    tagged: DataFrame,
    columns: list[str],
    model: LoadedModel,
    first_bad: tuple[int, int],
    offsets: dict[int, int],
) -> None:
    """Word the first bad row with the validator every other path uses, and raise."""
    from pyspark.sql import functions as F

    part, index = first_bad
    local = F.col(_MONO) - F.shiftleft(F.col(_PART).cast("long"), _PARTITION_SHIFT)
    rows = (
        tagged.where((F.col(_PART) == part) & (local == index))
        .select(*[F.col(f"`{c}`") for c in columns])
        .toPandas()
    )
    number = offsets[part] + index
    # A CSV row arrives as text, as pandas would read it before /batch turns numbers back.
    validation.frame_rows(_numbers_from_text(rows), model.schema, offset=number)
    raise InvalidInput(f"row {number}: refused by the model's schema")


@contextmanager
def udf_model(model: LoadedModel) -> Iterator[str]:
    """The served version's artifacts, whose pyfunc answers its class probabilities.

    The pyfunc a scikit-learn version is logged with answers `predict` (the class only); the
    REST path answers the probabilities too and takes the most probable class. MLflow's own
    `predict_fn` setting of the python_function flavour (what `pyfunc_predict_fn` sets at log
    time) makes the same artifacts answer `predict_proba`; nothing else of the model changes.
    """
    uri = f"models:/{model.name}/{model.version}"
    tmp = tempfile.mkdtemp(prefix="lifecycle-spark-model-")
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        meta = Model.load(local)
        meta.flavors["python_function"]["predict_fn"] = "predict_proba"
        meta.save(os.path.join(local, "MLmodel"))
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def score(spark: SparkSession, frame: DataFrame, model: LoadedModel, local: str) -> DataFrame:
    from pyspark.sql import functions as F

    proba = mlflow.pyfunc.spark_udf(spark, local, result_type="array<double>", env_manager="local")
    features = [F.col(feature_column(i)).alias(n) for i, n in enumerate(model.schema.names)]
    return frame.withColumn(PROBS, proba(F.struct(*features)))


def output_schema(scored: DataFrame, keep: tuple[str, ...], classes: tuple[Any, ...]) -> Any:
    from pyspark.sql.types import DataType, StructField, StructType

    types = ("string", prediction_type(classes), "string", "double", "string")
    added = [
        StructField(name, DataType.fromDDL(kind))
        for name, kind in zip(OUTPUT_COLUMNS, types, strict=True)
    ]
    return StructType([*[f for f in scored.schema.fields if f.name in keep], *added])


def write_output(out: DataFrame, job: SparkJob) -> None:
    """Spark writes a directory of part files (one per partition) at the output path,
    replacing an earlier run's; `_SUCCESS` appears only once every part is complete."""
    writer = out.write.mode("overwrite")
    if job.output_format == "csv":
        writer.csv(str(job.output), header=True)
    else:
        writer.parquet(str(job.output))


def _fmt(path: Path) -> str:
    return file_format(path)

"""Serving's verbs: `lifecycle serve` (REST), `lifecycle worker` (Celery and plain AMQP) and
`lifecycle spark-score` (a large file on Spark)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from lifecycle.core.options import echo, load_settings

app = typer.Typer()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind host (default: api_host).")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port (default: api_port).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="uvicorn worker processes (default: api_workers).")
    ] = None,
) -> None:
    """Serve the registry's current model over REST, following its transitions."""
    from serving.server import run

    settings = load_settings()
    run(
        settings,
        host or settings.api_host,
        port or settings.api_port,
        workers or settings.api_workers,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Tasks run at once (default: worker_concurrency).")
    ] = None,
    pool: Annotated[
        str, typer.Option(help="Celery pool: threads (one model per worker), solo or prefork.")
    ] = "threads",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Score async requests and batch files from the broker (and the plain-AMQP queue)."""
    from serving.worker import POOLS, run_worker

    if pool not in POOLS:
        raise typer.BadParameter(f"--pool: expected one of {', '.join(POOLS)}, got '{pool}'")
    settings = load_settings()
    run_worker(settings, concurrency or settings.worker_concurrency, pool, loglevel)


@app.command("spark-score")
def spark_score(
    input_path: Annotated[
        str, typer.Argument(metavar="INPUT", help="CSV or Parquet file of feature rows.")
    ],
    output: Annotated[
        str | None,
        typer.Option(
            help="Where Spark writes the scored part files, .csv or .parquet "
            "(default: batch_dir/out/JOB_ID.scored.FORMAT)."
        ),
    ] = None,
    job_id: Annotated[
        str | None,
        typer.Option(
            help="Names the rows JOB_ID-ROW in the store: a rerun with the same id "
            "stores nothing twice (default: a new id)."
        ),
    ] = None,
    master: Annotated[str, typer.Option(help="Spark master URL.")] = "local[*]",
) -> None:
    """Score a file too large for one worker with Spark, on the served version."""
    from serving.spark_job import SparkJob, run_job, spark_session

    settings = load_settings()
    job = SparkJob.plan(settings, input_path, output, job_id)
    spark = spark_session(master)
    try:
        summary = run_job(settings, job, spark)
    finally:
        spark.stop()
    echo(json.dumps(summary, indent=2))

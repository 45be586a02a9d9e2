"""Serving's verbs: `lifecycle serve` (REST) and `lifecycle worker` (Celery and plain AMQP)."""

from __future__ import annotations

from typing import Annotated

import typer

from lifecycle.core.options import load_settings

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

"""`lifecycle simulate`: traffic from the served version's own training rows (docs/simulate.md).

Kept apart from `reports.simulate` so that listing the commands (`lifecycle --help`) imports
neither MLflow, pandas nor httpx: the command imports its logic when it runs.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from lifecycle.core.options import echo, load_settings

CountOpt = Annotated[int, typer.Option("--count", "-n", min=1, help="Rows to send.")]
ShiftOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--shift",
        metavar="FEATURE=OP",
        help="Move a numeric feature: 'petal length (cm)=+1.5' adds, '=-0.5' subtracts, "
        "'=*2' multiplies (repeatable).",
    ),
]


class Transport(StrEnum):
    rest = "rest"
    async_ = "async"


ViaOpt = Annotated[
    Transport,
    typer.Option(
        "--via", help="rest: POST /predict; async: POST /predict/async, then poll its task."
    ),
]


def simulate(
    count: CountOpt = 100,
    shift: ShiftOpt = None,
    via: ViaOpt = Transport.rest,
    rate: Annotated[
        float, typer.Option(min=0, help="Rows per second; 0: as fast as the API answers.")
    ] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per request.")] = 1,
    feedback_accuracy: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=1,
            help="Send feedback for every answered row: the predicted label with this "
            "probability, another class otherwise.",
        ),
    ] = None,
    feedback_truth: Annotated[
        bool,
        typer.Option(
            "--feedback-truth",
            help="Send feedback for every answered row: its training label (ground truth, "
            "kept through a --shift).",
        ),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the draw (default: seed).")] = None,
    api: Annotated[str | None, typer.Option(help="API URL (default: api_host:api_port).")] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for an answer or an async result.")
    ] = 30.0,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the rows to this .csv or .parquet file instead of sending them (e.g. "
            "into the batch_scoring DAG's inbox: data_dir/pipelines/inbox/)."
        ),
    ] = None,
) -> None:
    """Send rows drawn from the served version's training data to the API (or write them to
    a file with --out)."""
    from reports.simulate import SimulationRequest
    from reports.simulate import simulate as run_simulation

    # The summary is the command's one line: no download progress bars around it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = load_settings()
    result = run_simulation(
        settings,
        SimulationRequest(
            api_url=api or settings.resolved_api_url(),
            count=count,
            seed=settings.seed if seed is None else seed,
            via="rest" if via is Transport.rest else "async",
            batch_size=batch_size,
            rate=rate,
            shifts=tuple(shift or ()),
            feedback_accuracy=feedback_accuracy,
            feedback_truth=feedback_truth,
            timeout=timeout,
            out=out,
        ),
    )
    echo(result.summary())

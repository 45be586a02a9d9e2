"""Reports' verbs: `lifecycle drift` (a report now, or on a schedule) and `lifecycle simulate`
(traffic drawn from the served version's own training rows)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lifecycle.core.options import echo, load_settings
from reports.simulate_cli import simulate

app = typer.Typer()
app.command()(simulate)

# A distinct code, so a pipeline tells "drift found" from "the report could not be made" (2).
EXIT_DRIFT = 3


@app.command()
def drift(
    model: Annotated[
        str | None, typer.Option("--model", help="Registered model (default: the served one).")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            help="Only this version's predictions, against its training rows "
            "(default: every version, against the newest prediction's)."
        ),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option(min=1, help="The last N predictions (default: report_last, unless --since)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Predictions since a duration ago (30m, 2h, 7d) or a time.")
    ] = None,
    html: Annotated[
        Path | None, typer.Option(help="Also write Evidently's HTML here (quality beside it).")
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help=f"Exit {EXIT_DRIFT} when the verdict is drift.")
    ] = False,
    every: Annotated[
        float | None,
        typer.Option(min=1, help="Repeat every SECONDS until stopped (what `lifecycle up` runs)."),
    ] = None,
) -> None:
    """Compare recent predictions with the served version's training rows (Evidently); print
    the per-feature table, live quality from feedback and the verdict; log it to MLflow."""
    from reports.printing import print_report, write_html
    from reports.runner import make_report
    from reports.schedule import repeat
    from reports.window import ReportRequest, parse_since

    # Reference rows are downloaded once per version: no progress bar between table lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = load_settings()
    tracking_uri = settings.resolved_tracking_uri()

    def once() -> str:
        # A duration is counted back from each report's own start.
        request = ReportRequest(
            model_name=model,
            version=version,
            last=last,
            since=parse_since(since) if since else None,
        )
        report = make_report(settings, request)
        print_report(report, echo, tracking_uri)
        if html is not None:
            write_html(report, html)
        return report.entry.verdict

    if every is not None:
        repeat(once, every, echo)
        return
    if once() == "drift" and fail_on_drift:
        raise typer.Exit(EXIT_DRIFT)

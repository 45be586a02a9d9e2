"""What `lifecycle drift` prints: the per-feature table, live quality per version, the verdict
and where the report is."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lifecycle.core.store.report_index import ReportEntry
from reports.runner import Report

_QUALITY = ("accuracy", "precision", "recall", "f1")


def print_report(report: Report, echo: Callable[[str], None], tracking_uri: str) -> None:
    entry = report.entry
    window = entry.window
    echo(
        f"{entry.model_name}: {entry.rows} predictions ({entry.sampled_rows} read) of versions "
        f"{', '.join(window.get('versions') or [])} against version {entry.model_version}'s "
        f"{entry.reference_rows} training rows"
    )
    echo(
        _table(
            ["feature", "kind", "test", "score", "threshold", "drifted"],
            [
                [
                    f.feature,
                    f.kind,
                    f.test,
                    f"{f.score:.4g}",
                    f"{f.threshold:g}",
                    "yes" if f.drifted else "no",
                ]
                for f in entry.features
            ],
        )
    )
    if entry.quality:
        echo(f"live quality from feedback ({entry.labelled_rows} labelled predictions):")
        echo(
            _table(
                ["version", "n", *_QUALITY, "held-out accuracy", "held-out f1"],
                _quality_rows(entry),
            )
        )
    drifted = len(entry.drifted_features)
    echo(
        f"verdict: {entry.verdict} ({drifted} of {len(entry.features)} features drifted, "
        f"share {entry.drift_share:.2f})"
    )
    echo(f"report {entry.id}: {_run_url(tracking_uri, entry)}")


def write_html(report: Report, path: Path) -> None:
    path.write_text(report.drift_html)
    if report.quality_html is not None:
        path.with_name(f"{path.stem}-quality{path.suffix or '.html'}").write_text(
            report.quality_html
        )


def _quality_rows(entry: ReportEntry) -> list[list[str]]:
    rows = []
    for version, figures in sorted((entry.quality or {}).items()):
        heldout = figures.get("heldout", {})
        rows.append(
            [
                version,
                str(figures.get("n", 0)),
                *(_fmt(figures.get(name)) for name in _QUALITY),
                _fmt(heldout.get("accuracy")),
                _fmt(heldout.get("f1")),
            ]
        )
    return rows


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _run_url(tracking_uri: str, entry: ReportEntry) -> str:
    if entry.run_id is None:
        return "not logged"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/0/runs/{entry.run_id}"
    return f"MLflow run {entry.run_id}"

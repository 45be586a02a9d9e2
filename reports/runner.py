"""Make one report: read the window, fetch the reference, run Evidently, log to MLflow, index.

The steps that can refuse (model, version, window size, training rows, a tracking server
that is down) come before any Evidently work, each with one line saying why.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from lifecycle.core import mlflow_gateway
from lifecycle.core.config import load_drift
from lifecycle.core.errors import NotFound
from lifecycle.core.settings import Settings
from lifecycle.core.store.frames import FEATURE_PREFIX, WINDOW_COLUMNS
from lifecycle.core.store.read import PredictionReader
from lifecycle.core.store.report_index import ReportEntry, ReportIndex
from reports import drift, publish, quality
from reports.errors import ReportError
from reports.reference import Reference, ReferenceCache
from reports.window import ReportRequest


@dataclass(frozen=True)
class Report:
    """A report made and published, with what the CLI prints and `--html` writes."""

    entry: ReportEntry
    drift_html: str
    quality_html: str | None


def run_report(settings: Settings, request: ReportRequest) -> ReportEntry:
    """The report asked for, logged to MLflow and indexed. Raises ReportError (422: no
    predictions, too few, no training rows), NotFound (404: unknown model or version),
    TrackingUnavailable / StoreUnavailable / ReportIndexUnavailable (503)."""
    return make_report(settings, request).entry


def make_report(settings: Settings, request: ReportRequest) -> Report:
    model_name = request.model_name or settings.registered_model_name()
    client = mlflow_gateway.connect(settings)
    if request.version is not None:
        mlflow_gateway.get_version(client, model_name, request.version)
    else:
        mlflow_gateway.search_versions(client, model_name)  # NotFound for an unknown model
    cache = ReferenceCache(
        client,
        settings.resolved_reports_dir() / "reference",
        settings.report_reference_rows,
        settings.seed,
    )
    # A version named up front is checked (training rows there?) before the window is read.
    reference = cache.get(model_name, request.version) if request.version else None
    reader = PredictionReader.from_settings(settings)
    try:
        window = _window(request, settings.report_last)
        rows = reader.count(model_name, **window)
        _check_size(model_name, request, window, rows, settings.report_min_rows)
        frame = reader.window(model_name, **window, sample=settings.report_sample_rows, total=rows)
    finally:
        reader.dispose()
    if reference is None:
        reference = cache.get(model_name, str(frame["model_version"].iloc[-1]))
    version = reference.version
    current = _features(frame, reference)
    config = load_drift(settings.conf_dir)
    outcome = drift.compare(reference.schema, reference.frame, current, config, config.summary)
    labelled = frame.loc[frame["feedback"].notna() & frame["label"].notna()]
    assessed = None
    if len(labelled):
        labelled = labelled.rename(columns={"feedback": "actual"})
        assessed = quality.assess(labelled, _heldout(cache, model_name, labelled, reference))

    entry = ReportEntry(
        id=uuid.uuid4().hex,
        created_at=datetime.now(UTC),
        model_name=model_name,
        model_version=version,
        window=_described(request, window, frame),
        rows=rows,
        sampled_rows=len(frame),
        reference_rows=len(reference.frame),
        labelled_rows=len(labelled),
        drift_share=outcome.drift_share,
        drifted_features=outcome.drifted_features,
        verdict=outcome.verdict,
        features=outcome.features,
        quality=assessed.per_version if assessed else None,
    )
    documents: dict[str, str | dict[str, Any]] = {
        "drift.html": outcome.html,
        "drift.json": outcome.snapshot,
    }
    if assessed is not None:
        documents["quality.html"] = assessed.html
        documents["quality.json"] = assessed.snapshot
    documents["summary.json"] = entry.to_json()
    entry = publish.log_report(client, settings.monitoring_experiment, entry, documents)
    index = ReportIndex(settings.resolved_database_url())
    try:
        index.add(entry)
    finally:
        index.dispose()
    return Report(entry, outcome.html, assessed.html if assessed else None)


def _window(request: ReportRequest, default_last: int) -> dict[str, Any]:
    last = request.last
    if last is None and request.since is None:
        last = default_last
    return {
        "version": request.version,
        "last": last,
        "since": request.since,
        "until": request.until,
    }


def _check_size(
    model_name: str, request: ReportRequest, window: dict[str, Any], rows: int, minimum: int
) -> None:
    what = f"{model_name}" + (f" version {request.version}" if request.version else "")
    span = _span(window)
    if rows == 0:
        raise ReportError(f"no predictions of {what} in the window ({span})")
    if rows < minimum:
        raise ReportError(
            f"only {rows} predictions of {what} in the window ({span}); a report needs at "
            f"least {minimum} (LIFECYCLE_REPORT_MIN_ROWS)"
        )


def _span(window: dict[str, Any]) -> str:
    parts = []
    if window["last"] is not None:
        parts.append(f"last {window['last']}")
    if window["since"] is not None:
        parts.append(f"since {window['since'].isoformat(timespec='seconds')}")
    if window["until"] is not None:
        parts.append(f"until {window['until'].isoformat(timespec='seconds')}")
    return ", ".join(parts)


def _features(frame: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """The window's feature columns, typed as the reference is (a feature no stored row
    carries is all missing)."""
    columns = {}
    for name in reference.schema.names:
        stored = f"{FEATURE_PREFIX}{name}" if name in WINDOW_COLUMNS else name
        columns[name] = frame[stored] if stored in frame else pd.Series(None, index=frame.index)
    return reference.schema.coerce(pd.DataFrame(columns))


def _heldout(
    cache: ReferenceCache, model_name: str, labelled: pd.DataFrame, reference: Reference
) -> dict[str, dict[str, float]]:
    """Each labelled version's held-out scores; a version whose run cannot be read has none."""
    out = {reference.version: reference.heldout}
    for version in sorted(set(map(str, labelled["model_version"])) - {reference.version}):
        try:
            out[version] = cache.get(model_name, version).heldout
        except (ReportError, NotFound):
            out[version] = {}
    return out


def _described(
    request: ReportRequest, window: dict[str, Any], frame: pd.DataFrame
) -> dict[str, Any]:
    found = frame["created_at"]
    return {
        **request.describe(),
        "last": window["last"],
        "first_prediction": found.min().isoformat() if len(found) else None,
        "last_prediction": found.max().isoformat() if len(found) else None,
        "versions": sorted(set(map(str, frame["model_version"]))),
    }

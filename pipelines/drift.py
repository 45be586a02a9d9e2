"""drift_check's decision: a drift and quality report on the served version, and whether it
calls for a retrain (drift, or live accuracy from feedback under the configured floor)."""

from __future__ import annotations

from typing import Any

import httpx

from lifecycle.core.config import RetrainConfig
from lifecycle.core.settings import Settings
from lifecycle.core.store.report_index import ReportEntry
from pipelines.api import ServiceUnreachable, api_version
from reports.errors import ReportError
from reports.runner import make_report
from reports.window import ReportRequest


def drift_check(settings: Settings, config: RetrainConfig) -> dict[str, Any]:
    model_name = settings.registered_model_name()
    version = _served_version(settings)
    what = f"{model_name}" + (f" v{version}" if version else "")
    print(f"drift report on {what} (last {settings.report_last} predictions)")
    try:
        report = make_report(settings, ReportRequest(model_name=model_name, version=version))
    except ReportError as exc:
        print(f"no report: {exc.message}")
        return {"retrain": False, "skipped": exc.message, "model_name": model_name}
    return decide(report.entry, config)


def decide(entry: ReportEntry, config: RetrainConfig) -> dict[str, Any]:
    """The answer drift_check returns for one report (pure: the unit tests' subject)."""
    figures = (entry.quality or {}).get(entry.model_version) or {}
    labelled = int(figures.get("n") or 0)
    accuracy = figures.get("accuracy")
    reasons = []
    if entry.verdict == "drift":
        drifted = ", ".join(entry.drifted_features)
        reasons.append(f"drift: {entry.drift_share:.0%} of the features drifted ({drifted})")
    if accuracy is not None and labelled >= config.min_labelled:
        if accuracy < config.min_accuracy:
            reasons.append(
                f"live accuracy {accuracy:.3f} < {config.min_accuracy:g} over {labelled} "
                "predictions with feedback"
            )
    elif labelled:
        print(
            f"accuracy not judged: {labelled} predictions with feedback, fewer than "
            f"retrain.min_labelled ({config.min_labelled})"
        )
    answer = {
        "report_id": entry.id,
        "report_run_id": entry.run_id,
        "model_name": entry.model_name,
        "model_version": entry.model_version,
        "verdict": entry.verdict,
        "drift_share": entry.drift_share,
        "accuracy": None if accuracy is None else float(accuracy),
        "labelled_rows": labelled,
        "min_accuracy": config.min_accuracy,
        "retrain": bool(reasons),
        "reasons": reasons,
    }
    decision = "retrain: " + "; ".join(reasons) if reasons else "no retrain"
    print(
        f"report {entry.id} on {entry.model_name} v{entry.model_version}: verdict "
        f"{entry.verdict}, drift share {entry.drift_share:.2f}, accuracy {answer['accuracy']} "
        f"over {labelled} labelled -> {decision}"
    )
    return answer


def _served_version(settings: Settings) -> str | None:
    """The version the API serves: the report covers its predictions only. Unknown (API down
    or serving none): the report takes the version of the newest prediction, and says so."""
    try:
        with httpx.Client(base_url=settings.resolved_api_url(), timeout=10.0) as client:
            version = api_version(client)
    except ServiceUnreachable as exc:
        print(f"{exc.message}: reporting on the version of the newest prediction")
        return None
    if version is None:
        print("the API serves no model now: reporting on the version of the newest prediction")
    return version

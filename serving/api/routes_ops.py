"""Operations: health, readiness, the served model, metrics and feedback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from serving import validation
from serving.api import schemas
from serving.api.deps import HolderDep, MetricsDep, SettingsDep, StoreDep, json_body
from serving.api.routes import model_headers
from serving.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])
FEEDBACK_REFRESH_SECONDS = 10.0


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready", summary="Readiness: a model is loaded (details say if the registry is degraded)"
)
async def ready(holder: HolderDep) -> JSONResponse:
    model = holder.current
    details = holder.status()
    body: dict[str, Any] = {
        "status": "ready" if model else "not ready",
        "model": model.describe() if model else None,
        "details": details,
    }
    return JSONResponse(body, status_code=200 if model else 503)


@router.get("/model", summary="The served model, its schema and how it is followed")
async def model(holder: HolderDep) -> JSONResponse:
    current = holder.get()
    schema = current.schema
    body = {
        **current.describe(),
        "flavor": current.flavor,
        "scoring_path": getattr(current.predictor, "path", current.flavor),
        "loaded_at": current.loaded_at.isoformat(),
        "features": [{"name": f.name, "kind": f.kind} for f in schema.features],
        "target": schema.target,
        "classes": list(schema.classes),
        "class_labels": list(schema.class_labels),
        "following": holder.status(),
    }
    return JSONResponse(body, headers=model_headers(current))


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(holder: HolderDep, store: StoreDep, metrics: MetricsDep) -> Response:
    current = holder.current
    due = metrics.feedback_due(FEEDBACK_REFRESH_SECONDS)
    if store is not None and current is not None and due:
        try:
            await run_in_threadpool(metrics.refresh_feedback, current.name, store.feedback_stats)
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("feedback metrics not refreshed: %s", exc)
    return Response(metrics.render(), media_type=CONTENT_TYPE)


@router.post(
    "/feedback",
    summary="The true label of an earlier prediction (by request id)",
    openapi_extra=schemas.body(schemas.FEEDBACK),
    responses={**schemas.ERRORS, 404: {"description": "Unknown request id"}},
)
async def feedback(
    request: Request,
    settings: SettingsDep,
    holder: HolderDep,
    store: StoreDep,
    metrics: MetricsDep,
) -> JSONResponse:
    body = await json_body(request, settings.max_body_bytes)
    request_id, raw_label = _feedback_fields(body)
    current = holder.get()
    label = validation.normalise_label(raw_label, current.schema)
    if store is None:
        raise validation.InvalidInput(
            "feedback needs the prediction store, which is not configured"
        )
    await run_in_threadpool(store.add_feedback, request_id, label)
    metrics.feedback_changed()
    return JSONResponse({"request_id": request_id, "label": label, "status": "recorded"})


def _feedback_fields(body: Any) -> tuple[str, Any]:
    if not isinstance(body, dict):
        raise validation.InvalidInput('body must be a JSON object with "request_id" and "label"')
    missing = [k for k in ("request_id", "label") if k not in body]
    if missing:
        raise validation.InvalidInput(f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(body) - {"request_id", "label"})
    if extra:
        raise validation.InvalidInput(f"unknown field(s): {', '.join(extra)}")
    request_id = body["request_id"]
    if not isinstance(request_id, str) or not request_id or len(request_id) > 200:
        raise validation.InvalidInput("request_id must be a non-empty string")
    return request_id, body["label"]

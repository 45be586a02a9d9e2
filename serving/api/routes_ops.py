"""Operations: health, readiness, the served model, metrics and feedback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lifecycle import scoring
from serving.api import schemas
from serving.api.deps import Svc, json_body
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
async def ready(services: Svc) -> JSONResponse:
    model = services.holder.current
    details = services.holder.status()
    body: dict[str, Any] = {
        "status": "ready" if model else "not ready",
        "model": model.describe() if model else None,
        "details": details,
    }
    return JSONResponse(body, status_code=200 if model else 503)


@router.get("/model", summary="The served model, its schema and how it is followed")
async def model(services: Svc) -> JSONResponse:
    current = services.holder.get()
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
        "following": services.holder.status(),
    }
    return JSONResponse(body, headers=model_headers(current))


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: Svc) -> Response:
    current = services.holder.current
    due = services.metrics.feedback_due(FEEDBACK_REFRESH_SECONDS)
    if services.store is not None and current is not None and due:
        try:
            await run_in_threadpool(
                services.metrics.refresh_feedback, current.name, services.store.feedback_stats
            )
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("feedback metrics not refreshed: %s", exc)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)


@router.post(
    "/feedback",
    summary="The true label of an earlier prediction (by request id)",
    openapi_extra=schemas.body(schemas.FEEDBACK),
    responses={**schemas.ERRORS, 404: {"description": "Unknown request id"}},
)
async def feedback(request: Request, services: Svc) -> JSONResponse:
    body = await json_body(request, services.settings.max_body_bytes)
    request_id, raw_label = _feedback_fields(body)
    current = services.holder.get()
    label = scoring.normalise_label(raw_label, current.schema)
    if services.store is None:
        raise scoring.InvalidInput("feedback needs the prediction store, which is not configured")
    await run_in_threadpool(services.store.add_feedback, request_id, label)
    services.metrics.feedback_changed()
    return JSONResponse({"request_id": request_id, "label": label, "status": "recorded"})


def _feedback_fields(body: Any) -> tuple[str, Any]:
    if not isinstance(body, dict):
        raise scoring.InvalidInput('body must be a JSON object with "request_id" and "label"')
    missing = [k for k in ("request_id", "label") if k not in body]
    if missing:
        raise scoring.InvalidInput(f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(body) - {"request_id", "label"})
    if extra:
        raise scoring.InvalidInput(f"unknown field(s): {', '.join(extra)}")
    request_id = body["request_id"]
    if not isinstance(request_id, str) or not request_id or len(request_id) > 200:
        raise scoring.InvalidInput("request_id must be a non-empty string")
    return request_id, body["label"]

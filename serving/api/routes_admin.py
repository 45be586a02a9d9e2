"""Registry following on demand: admin reload and the MLflow webhook receiver."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from serving import validation
from serving.api import schemas
from serving.api.deps import Admin, Svc, read_limited
from serving.webhooks import Forbidden, is_alias_event

log = logging.getLogger(__name__)
router = APIRouter(tags=["registry"])


@router.post(
    "/reload_model",
    summary="Reconcile with the registry now (admin token)",
    dependencies=[Admin],
    responses={401: {"description": "No token"}, 403: {"description": "Wrong or disabled"}},
)
async def reload_model(services: Svc) -> JSONResponse:
    reconciler = services.reconciler
    if reconciler is not None:
        outcome = await run_in_threadpool(reconciler.reconcile_now)
    else:
        outcome = await run_in_threadpool(services.holder.reconcile)
    current = services.holder.current
    return JSONResponse(
        {
            "outcome": outcome.action if outcome else "timeout",
            "detail": outcome.detail if outcome else "reconcile did not finish in time",
            "model": current.describe() if current else None,
        }
    )


@router.post(
    "/webhooks/mlflow",
    summary="MLflow registry webhook (HMAC-verified); alias events reconcile at once",
    openapi_extra=schemas.body(schemas.WEBHOOK),
    responses={401: {"description": "Missing signature"}, 403: {"description": "Rejected"}},
)
async def mlflow_webhook(request: Request, services: Svc) -> JSONResponse:
    verifier = services.verifier
    if verifier is None:
        raise Forbidden("webhooks are disabled: set LIFECYCLE_WEBHOOK_SECRET to enable them")
    body = await read_limited(request, services.settings.max_body_bytes)
    # The replay check writes to the application database: off the event loop.
    await run_in_threadpool(verifier.verify, request.headers, body)
    payload = validation.loads(body)
    if is_alias_event(payload):
        log.info("webhook %s.%s: reconciling now", payload.get("entity"), payload.get("action"))
        if services.reconciler is not None:
            services.reconciler.trigger()
        return JSONResponse({"status": "accepted"}, status_code=202)
    return JSONResponse({"status": "ignored"})

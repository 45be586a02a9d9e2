"""Registry following on demand: admin reload and the MLflow webhook receiver."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from serving import validation
from serving.api import schemas
from serving.api.deps import Admin, Svc, read_limited
from serving.api.models import ModelRef, ReloadAnswer, WebhookAnswer
from serving.webhooks import Forbidden, is_alias_event

log = logging.getLogger(__name__)
router = APIRouter(tags=["registry"])
ADMIN_ERRORS = schemas.error_responses(
    {401: "No admin token", 403: "Wrong admin token, or admin endpoints disabled"}
)
ADMIN_ERRORS[401]["headers"] = {
    "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}
}


@router.post(
    "/reload_model",
    summary="Reconcile with the registry now (admin token)",
    dependencies=[Admin],
    responses=ADMIN_ERRORS,
)
async def reload_model(services: Svc) -> ReloadAnswer:
    reconciler = services.reconciler
    if reconciler is not None:
        outcome = await run_in_threadpool(reconciler.reconcile_now)
    else:
        outcome = await run_in_threadpool(services.holder.reconcile)
    current = services.holder.current
    return ReloadAnswer(
        outcome=outcome.action if outcome else "timeout",
        detail=outcome.detail if outcome else "reconcile did not finish in time",
        model=ModelRef(**current.describe()) if current else None,
    )


@router.post(
    "/webhooks/mlflow",
    summary="MLflow registry webhook (HMAC-verified); alias events reconcile at once",
    # The body stays raw bytes: the signature is computed over them, so it is read, verified
    # and only then parsed, and this schema only documents it.
    openapi_extra=schemas.body(schemas.WEBHOOK),
    responses={
        202: {"model": WebhookAnswer, "description": "An alias event: reconciling now"},
        **schemas.error_responses(
            {
                400: schemas.MALFORMED,
                401: "Missing signature headers",
                403: "Bad, stale or replayed signature, or webhooks disabled",
                413: schemas.TOO_LARGE,
                422: "NaN or Infinity in the JSON",
            }
        ),
    },
)
async def mlflow_webhook(request: Request, response: Response, services: Svc) -> WebhookAnswer:
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
        response.status_code = 202
        return WebhookAnswer(status="accepted")
    return WebhookAnswer(status="ignored")

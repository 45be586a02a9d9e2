"""Scoring endpoints: `/predict` (the reference body and more) and MLflow's `/invocations`."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lifecycle import scoring
from lifecycle.model import LoadedModel
from serving.api import schemas
from serving.api.deps import Services, Svc, json_body

router = APIRouter(tags=["scoring"])


@router.post(
    "/predict",
    summary="Score one row or a batch with the served model",
    openapi_extra=schemas.body(schemas.PREDICT),
    responses=schemas.ERRORS,
)
async def predict(request: Request, services: Svc) -> JSONResponse:
    started = time.perf_counter()
    body = await json_body(request, services.settings.max_body_bytes)
    model = services.holder.get()
    rows = scoring.parse_predict(body, model.schema, services.settings.max_batch_rows)
    scored = scoring.score(model, rows)
    rid = request.state.request_id
    ids = scoring.row_ids(rid, len(rows))
    now = datetime.now(UTC)
    content = scoring.predict_response(model, rows, scored, rid, ids, now)
    record(services, model, rows, scored, ids, now, started)
    return JSONResponse(content, headers=model_headers(model))


@router.post(
    "/invocations",
    summary="MLflow scoring protocol (drop-in for `mlflow models serve`)",
    openapi_extra=schemas.body(schemas.INVOCATIONS),
    responses=schemas.ERRORS,
)
async def invocations(request: Request, services: Svc) -> JSONResponse:
    started = time.perf_counter()
    body = await json_body(request, services.settings.max_body_bytes)
    model = services.holder.get()
    rows = scoring.parse_invocations(body, model.schema, services.settings.max_batch_rows)
    scored = scoring.score(model, rows)
    ids = scoring.row_ids(request.state.request_id, len(rows))
    record(services, model, rows, scored, ids, datetime.now(UTC), started)
    return JSONResponse({"predictions": scored.predictions}, headers=model_headers(model))


def model_headers(model: LoadedModel) -> dict[str, str]:
    headers = {"X-Model-Name": model.name, "X-Model-Version": model.version}
    if model.stage:
        headers["X-Model-Stage"] = model.stage
    if model.alias:
        headers["X-Model-Alias"] = model.alias
    if model.run_id:
        headers["X-Model-Run-Id"] = model.run_id
    return headers


def record(
    services: Services,
    model: LoadedModel,
    rows: scoring.Rows,
    scored: scoring.Scored,
    ids: list[str],
    created_at: datetime,
    started: float,
) -> None:
    services.metrics.observe_predictions(model, scored.labels)
    if services.store is None:
        return
    latency_ms = (time.perf_counter() - started) * 1000
    for record in scoring.records(model, rows, scored, ids, "rest", created_at, latency_ms):
        services.store.submit(record)

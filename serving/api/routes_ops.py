"""Operations: health, readiness, the served model, metrics and feedback."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from lifecycle.core.errors import LifecycleError
from serving import validation
from serving.api import schemas
from serving.api.deps import HolderDep, JsonBodyRoute, MetricsDep, StoreDep
from serving.api.models import (
    FeatureInfo,
    FeedbackAnswer,
    FeedbackRequest,
    Following,
    Health,
    ModelInfo,
    ModelRef,
    Ready,
)
from serving.api.routes import model_headers
from serving.api.startup import ProcessState
from serving.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"], route_class=JsonBodyRoute)
FEEDBACK_REFRESH_SECONDS = 10.0


class FeedbackDisabled(LifecycleError):
    status_code = 503


@router.get("/health", summary="Liveness: the process answers")
async def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    summary="Readiness: a model is loaded and the process is not draining (details say if "
    "the registry or the prediction store is degraded, and if the model is stale)",
    responses={503: {"model": Ready, "description": "No model loaded yet, or draining"}},
)
async def ready(request: Request, holder: HolderDep, store: StoreDep, response: Response) -> Ready:
    model = holder.current
    process: ProcessState = request.app.state.process
    # A degraded store does not fail readiness: predictions still answer, and taking every
    # replica out of a balancer because the prediction log is down would turn a logging
    # outage into a serving outage.
    serving = model is not None and not process.draining
    if not serving:
        response.status_code = 503
    details = holder.status()
    details.update(draining=process.draining, startup_error=process.startup_error)
    if store is not None:
        state = store.state()
        details.update(store=state.state, store_error=state.reason)
    return Ready(
        status="ready" if serving else "not ready",
        model=ModelRef(**model.describe()) if model else None,
        details=Following.model_validate(details),
    )


@router.get(
    "/model",
    summary="The served model, its schema and how it is followed",
    responses=schemas.error_responses({503: "No model loaded yet"}),
)
async def model(holder: HolderDep, response: Response) -> ModelInfo:
    current = holder.get()
    schema = current.schema
    response.headers.update(model_headers(current))
    return ModelInfo(
        **current.describe(),
        flavor=current.flavor,
        scoring_path=getattr(current.predictor, "path", current.flavor),
        loaded_at=current.loaded_at,
        features=[FeatureInfo(name=f.name, kind=f.kind) for f in schema.features],
        target=schema.target,
        classes=list(schema.classes),
        class_labels=list(schema.class_labels),
        following=Following.model_validate(holder.status()),
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
        }
    },
)
async def prometheus_metrics(holder: HolderDep, store: StoreDep, metrics: MetricsDep) -> Response:
    current = holder.current
    due = metrics.feedback_due(FEEDBACK_REFRESH_SECONDS)
    if store is not None and current is not None and due:
        try:
            await run_in_threadpool(metrics.refresh_feedback, current.name, store.feedback_stats)
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("feedback metrics not refreshed: %s", exc)
    # render() may read the report index (drift gauges): off the event loop.
    return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE)


@router.post(
    "/feedback",
    summary="The true label of an earlier prediction (by request id)",
    responses=schemas.error_responses(
        {
            400: schemas.MALFORMED,
            404: "No prediction with this request id",
            413: schemas.TOO_LARGE,
            415: schemas.NOT_JSON,
            422: "Invalid body, or the label is not a class of the served model",
            503: "No model loaded yet, or no prediction store configured",
        }
    ),
)
async def feedback(
    body: FeedbackRequest, holder: HolderDep, store: StoreDep, metrics: MetricsDep
) -> FeedbackAnswer:
    current = holder.get()
    label = validation.normalise_label(body.label, current.schema)
    if store is None:
        raise FeedbackDisabled("feedback needs the prediction store, which is not configured")
    await run_in_threadpool(store.add_feedback, body.request_id, label)
    metrics.feedback_changed()
    return FeedbackAnswer(request_id=body.request_id, label=label, status="recorded")

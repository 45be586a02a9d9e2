"""Scoring endpoints: `/predict` (the reference body and more) and MLflow's `/invocations`,
`/ping` and `/version` (a drop-in for `mlflow models serve`, errors in MLflow's shape).

The two scoring routes only read the body and hand it to `serving.api.scoring`, which the raw
ASGI fast path (`serving.api.fast`) calls too: in a served app the fast path answers them
first, and these routes document them in the OpenAPI schema and answer when the fast path is
off (`create_app(..., fast_scoring=False)`).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from mlflow.version import VERSION as MLFLOW_VERSION

from lifecycle.core.errors import LifecycleError
from serving import bodies
from serving.api import errors, schemas, scoring
from serving.api.deps import Svc, check_json_type, read_limited, recheck
from serving.runtime import LoadedModel

router = APIRouter(tags=["scoring"])

# The scoring routes take the whole `Services` as their one dependency: FastAPI resolves each
# dependency per request, and four per-service ones cost ~45 µs a request here (measured
# in-process), about a tenth of a single-row request.


@router.post(
    "/predict",
    summary="Score one row or a batch with the served model",
    openapi_extra=schemas.body(schemas.PREDICT),
    responses=schemas.ERRORS,
)
async def predict(request: Request, services: Svc) -> Response:
    started = time.perf_counter()
    check_json_type(request.headers.get("content-type"))
    body = await read_limited(request, services.settings.max_body_bytes)
    request_id = request.state.request_id
    return _answer(scoring.predict(services, body, request_id, started, recheck(request.scope)))


@router.post(
    "/invocations",
    summary="MLflow scoring protocol (drop-in for `mlflow models serve`)",
    openapi_extra=schemas.INVOCATIONS_BODY,
    responses=schemas.MLFLOW_ERRORS,
)
async def invocations(request: Request, services: Svc) -> Response:
    started = time.perf_counter()
    try:
        mime = bodies.media_type(request.headers.get("content-type"))
        body = await read_limited(request, services.settings.max_body_bytes)
        request_id = request.state.request_id
        answer = scoring.invocations(
            services, mime, body, request_id, started, recheck(request.scope)
        )
    except LifecycleError as exc:
        return errors.mlflow_error(exc)
    except Exception as exc:  # answered in MLflow's shape, and logged
        return errors.mlflow_unexpected(request, exc)
    return _answer(answer)


@router.get(
    "/ping",
    summary="MLflow's liveness probe: 200 once a model is loaded",
    responses=schemas.MLFLOW_ERRORS,
)
async def ping(services: Svc) -> Response:
    try:
        services.holder.get()
    except LifecycleError as exc:
        return errors.mlflow_error(exc)
    return Response("\n", media_type="application/json")  # MLflow's answer, byte for byte


@router.get("/version", summary="The MLflow version, as `mlflow models serve` answers it")
async def version() -> Response:
    return Response(MLFLOW_VERSION, media_type="application/json")


def _answer(answer: scoring.Answer) -> Response:
    response = Response(answer.body, media_type="application/json")
    # Model headers first, as `JSONResponse(..., headers=...)` orders them.
    response.raw_headers[:0] = answer.headers
    return response


def model_headers(model: LoadedModel) -> dict[str, str]:
    return dict(model.header_items)

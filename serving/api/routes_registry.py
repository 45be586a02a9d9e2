"""Registry actions over HTTP (admin token): check the gates, promote, roll back.

The same functions as `lifecycle promote` and `lifecycle rollback` (`registry.promotion`),
with the API's settings: the same gates configuration (`conf_dir`), the same promotion lock
(the application database) and the same refusals, so a promotion from the UI and one from a
shell exclude each other and fail with the same words. Every call talks to the tracking
server and may score models for the gates: it runs in the thread pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from registry.gates import GateResult, PromotionRefused
from registry.promotion import PromotionResult, check_gates, promote, rollback
from serving.api import schemas
from serving.api.deps import Admin, JsonBodyRoute, SettingsDep
from serving.api.models import (
    GateCheckOut,
    GateCheckRequest,
    GateOut,
    GateRefusal,
    PromoteRequest,
    PromotionOut,
    RollbackRequest,
)
from serving.api.routes_admin import ADMIN_ERRORS

router = APIRouter(prefix="/registry", tags=["registry"], route_class=JsonBodyRoute)

_COMMON = {
    400: schemas.MALFORMED,
    404: "No such registered model or version",
    413: schemas.TOO_LARGE,
    415: schemas.NOT_JSON,
    422: "A field is invalid (the detail names it)",
    503: "The tracking server is unreachable",
}
_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {
        "model": GateRefusal,
        "description": "A gate refused (the body holds every gate's result), or another "
        "promotion of the model held the lock too long",
    }
}


def gate_out(results: Sequence[GateResult]) -> list[GateOut]:
    return [
        GateOut(
            name=r.name, passed=r.passed, enforced=r.enforced, numbers=r.numbers, detail=r.detail
        )
        for r in results
    ]


def _promotion(result: PromotionResult) -> PromotionOut:
    return PromotionOut(
        action="rollback" if result.action == "rollback" else "promote",
        name=result.name,
        version=result.version,
        stage=result.stage,
        alias=result.alias,
        previous_version=result.previous_version,
        changed=result.changed,
        forced=result.forced,
        gates=gate_out(result.gates),
    )


def _refusal(exc: PromotionRefused) -> JSONResponse:
    body = GateRefusal(detail=exc.message, gates=gate_out(exc.results))
    return JSONResponse(body.model_dump(mode="json"), status_code=exc.status_code)


@router.post(
    "/gates",
    summary="Evaluate the gates a promotion would run, changing nothing (admin token)",
    dependencies=[Admin],
    responses={**ADMIN_ERRORS, **schemas.error_responses(_COMMON)},
)
async def gates(body: GateCheckRequest, settings: SettingsDep) -> GateCheckOut:
    check = await run_in_threadpool(check_gates, settings, body.name, body.version, body.stage)
    return GateCheckOut(
        name=check.name,
        version=check.version,
        stage=check.stage,
        passed=check.passed,
        gates=gate_out(check.gates),
    )


@router.post(
    "/promote",
    summary="Gate a version and move it to Production or Staging (admin token)",
    dependencies=[Admin],
    response_model=PromotionOut,
    responses={**ADMIN_ERRORS, **schemas.error_responses(_COMMON), **_REFUSED},
)
async def promote_version(body: PromoteRequest, settings: SettingsDep) -> Any:
    try:
        result = await run_in_threadpool(
            promote, settings, body.name, body.version, body.stage, body.reason, body.force
        )
    except PromotionRefused as exc:
        return _refusal(exc)
    return _promotion(result)


@router.post(
    "/rollback",
    summary="Return Production to the version the current one replaced (admin token)",
    dependencies=[Admin],
    response_model=PromotionOut,
    responses={
        **ADMIN_ERRORS,
        **schemas.error_responses({**_COMMON, 404: "No such registered model"}),
        409: {
            "model": GateRefusal,
            "description": "Nothing to roll back to (detail only), a gate refused the "
            "earlier version (with the gates), or the lock was held too long",
        },
    },
)
async def rollback_model(body: RollbackRequest, settings: SettingsDep) -> Any:
    try:
        result = await run_in_threadpool(rollback, settings, body.name, body.reason)
    except PromotionRefused as exc:
        return _refusal(exc)
    return _promotion(result)

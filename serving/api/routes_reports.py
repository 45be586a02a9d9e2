"""Drift and quality reports: read the index, fetch a report's HTML from MLflow, queue one.

Reports are made by `reports.runner.run_report` in the Celery worker (`lifecycle.report`);
these routes only read the index (`lifecycle.core.store.report_index`) and the artifacts it
names, and send the task.
"""

from __future__ import annotations

import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import mlflow
from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from lifecycle.core.errors import ConfigError, LifecycleError, NotFound, TrackingUnavailable
from lifecycle.core.settings import Settings
from lifecycle.core.store.report_index import ReportEntry, ReportIndex
from reports.window import parse_since
from serving.api import schemas
from serving.api.deps import (
    Admin,
    HolderDep,
    ReportsDep,
    SettingsDep,
    Svc,
    get_celery,
    read_limited,
    validated,
)
from serving.api.models import (
    REPORT_ID_PATTERN,
    SINCE_DURATION_PATTERN,
    Report,
    ReportAccepted,
    ReportList,
    ReportTaskRequest,
)
from serving.api.params import AnyModelQuery, ServedModelQuery, model_version

# Shared with /reload_model and /predict/async, so the admin refusal and the way a task is
# sent (ledger first, broker errors as 503) stay one contract.
from serving.api.routes_admin import ADMIN_ERRORS
from serving.api.routes_async import send_task
from serving.validation import UnsupportedMediaType, loads
from serving.worker import REPORT_TASK


class _SharedPathRoute(APIRoute):
    """A 405 names every method of the path (GET and POST /reports), not only this route's:
    Starlette answers from the first route whose path matched. Every /reports route is in
    this module's router, so it is the one to ask."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = {
                method
                for route in router.routes
                if isinstance(route, APIRoute) and route.path == self.path
                for method in route.methods or ()
            }
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        await super().handle(scope, receive, send)


router = APIRouter(tags=["reports"], route_class=_SharedPathRoute)

# What `.html?part=` names, and the artifact of the index row it serves.
PARTS = {"drift": "drift_html", "quality": "quality_html"}


class InvalidReportRequest(LifecycleError):
    status_code = 422


ReportId = Annotated[
    str, PathParam(pattern=REPORT_ID_PATTERN, description="The report id (GET /reports).")
]
_DURATION = re.compile(r"\s*\d+(\.\d+)?\s*[smhdw]\s*")
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_INDEX_DOWN = {503: "The report index (application database) is unavailable"}


@router.get(
    "/reports",
    summary="Drift/quality reports, newest first",
    responses=schemas.error_responses({422: "A filter is not valid", **_INDEX_DOWN}),
)
async def list_reports(
    index: ReportsDep,
    model: AnyModelQuery = None,
    version: Annotated[str | None, model_version("Compared model version.")] = None,
    verdict: Literal["drift", "no_drift"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ReportList:
    entries = await run_in_threadpool(
        index.list, model_name=model, version=version, verdict=verdict, limit=limit
    )
    return ReportList(reports=[_report(entry) for entry in entries])


@router.get(
    "/reports/latest",
    summary="The newest report of a model (default: the served model)",
    responses=schemas.error_responses(
        {404: "No report for this model yet", 422: "Not a model name", **_INDEX_DOWN}
    ),
)
async def latest_report(
    index: ReportsDep, holder: HolderDep, model: ServedModelQuery = None
) -> Report:
    name = model or holder.target.name
    entry = await run_in_threadpool(index.latest, name)
    if entry is None:
        raise NotFound(f"no report for model {name} yet")
    return _report(entry)


# Before /reports/{report_id}: that path would take "<id>.html" as an id.
@router.get(
    "/reports/{report_id}.html",
    summary="A report's Evidently HTML, fetched from MLflow",
    response_class=HTMLResponse,
    responses={
        200: {"description": "The report page", "content": {"text/html": {}}},
        # Spelled out: with response_class=HTMLResponse, a `model` would be listed as HTML.
        **{
            code: {"description": text, "content": {"application/json": {"schema": _ERROR_REF}}}
            for code, text in {
                404: "No such report, or it has no such part",
                422: "Not a report id, or not a part",
                503: "The tracking server or the report index is unavailable",
            }.items()
        },
    },
)
async def report_html(
    report_id: ReportId,
    index: ReportsDep,
    settings: SettingsDep,
    part: Annotated[
        Literal["drift", "quality"],
        Query(description="drift: the data drift report; quality: live classification quality."),
    ] = "drift",
) -> HTMLResponse:
    entry = await _entry(index, report_id)
    uri = entry.artifacts.get(PARTS[part])
    if not uri:
        raise NotFound(f"report {report_id} has no {part} report")
    page = await run_in_threadpool(_download_text, uri, settings)
    return HTMLResponse(page)


@router.get(
    "/reports/{report_id}",
    summary="One report's index entry",
    responses=schemas.error_responses(
        {404: "No such report", 422: "Not a report id", **_INDEX_DOWN}
    ),
)
async def get_report(report_id: ReportId, index: ReportsDep) -> Report:
    return _report(await _entry(index, report_id))


_BODY_SCHEMA = ReportTaskRequest.model_json_schema()


@router.post(
    "/reports",
    status_code=202,
    summary="Queue a drift/quality report for the worker (admin token); poll Location",
    dependencies=[Admin],
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"schema": _BODY_SCHEMA}},
            "required": False,
        }
    },
    responses={
        202: {
            "description": "Queued; poll the Location (the task's status) for the report",
            "headers": {
                "Location": {"description": "/tasks/{task_id}", "schema": {"type": "string"}}
            },
        },
        **ADMIN_ERRORS,
        **schemas.error_responses(
            {
                400: schemas.MALFORMED,
                413: schemas.TOO_LARGE,
                415: schemas.NOT_JSON,
                422: "Invalid body, or `since` is neither a duration nor an ISO time",
                503: "Async tasks not configured, or the broker is unavailable",
            }
        ),
    },
)
async def queue_report(request: Request, response: Response, services: Svc) -> ReportAccepted:
    body = validated(ReportTaskRequest, await _optional_json(request, services.settings))
    kwargs = _task_kwargs(body)
    # After the body: a bad request is a 422 whether or not this server can send tasks.
    client = await get_celery(services)
    task_id: str = request.state.request_id
    await send_task(client, REPORT_TASK, task_id, kwargs=kwargs)
    location = f"/tasks/{task_id}"
    response.headers["Location"] = location
    return ReportAccepted(task_id=task_id, kind="report", status="pending", status_url=location)


def _task_kwargs(body: ReportTaskRequest) -> dict[str, Any]:
    since = _since(body.since) if body.since is not None else None
    return {
        "model": body.model,
        "version": body.version,
        "last": body.last,
        "since": since.isoformat() if since else None,
    }


def _since(text: str) -> datetime:
    # A duration is held to the documented bound: longer ones overflow a date.
    if _DURATION.fullmatch(text) and not re.fullmatch(SINCE_DURATION_PATTERN, text):
        raise InvalidReportRequest(f"since: '{text}' is too long: at most 99999 of a unit")
    try:
        return parse_since(text)
    except ConfigError as exc:
        raise InvalidReportRequest(exc.message) from None
    except OverflowError:
        raise InvalidReportRequest(f"since: '{text}' is out of range") from None


async def _optional_json(request: Request, settings: Settings) -> Any:
    """The JSON body, or {} for none: every field of a report request has a default."""
    raw = await read_limited(request, settings.max_body_bytes)
    if not raw.strip():
        return {}
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"content type must be application/json, got '{ctype or 'none'}'"
        )
    return loads(raw)


async def _entry(index: ReportIndex, report_id: str) -> ReportEntry:
    entry = await run_in_threadpool(index.get, report_id)
    if entry is None:
        raise NotFound(f"no report with id '{report_id}'")
    return entry


def _report(entry: ReportEntry) -> Report:
    return Report.model_validate(entry.to_json())


def _download_text(uri: str, settings: Settings) -> str:
    tracking_uri = settings.resolved_tracking_uri()
    with tempfile.TemporaryDirectory(prefix="lifecycle-report-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri
            )
        except MlflowException as exc:
            if exc.error_code == databricks_pb2.ErrorCode.Name(
                databricks_pb2.RESOURCE_DOES_NOT_EXIST
            ):
                raise NotFound(f"report artifact {uri} is missing from MLflow") from None
            raise _unavailable(tracking_uri, exc) from None
        except Exception as exc:  # requests, boto or OS errors, by artifact store
            raise _unavailable(tracking_uri, exc) from None
        return Path(local).read_text(encoding="utf-8", errors="replace")


def _unavailable(tracking_uri: str, exc: Exception) -> TrackingUnavailable:
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return TrackingUnavailable(
        f"report artifact not fetched from MLflow at {tracking_uri} ({type(exc).__name__}: {first})"
    )

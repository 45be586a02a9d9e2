"""Async scoring over REST: `POST /predict/async`, `POST /batch`, `GET /tasks/{id}` and
`GET /batch/{id}/output` (the scored file).

The request id becomes the task id, so it is known before the task is sent: a redelivered task
stores its predictions under the same ids (the store skips them), and the client can look the
predictions up (or send /feedback) under the id it got back. The Celery client is built at
start-up with the app's other collaborators; it connects to the broker on the first send.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from lifecycle.core.errors import LifecycleError, NotFound
from lifecycle.core.settings import Settings
from serving import validation
from serving.api import schemas
from serving.api.deps import CeleryDep, HolderDep, SettingsDep, json_body, recheck, validated
from serving.api.models import (
    TASK_ID_PATTERN,
    BatchPathRequest,
    TaskAccepted,
    TaskProgress,
    TaskState,
    TaskStatus,
)
from serving.async_scoring import plain_json, printable
from serving.batch_files import accepted_header, progress_rows
from serving.batch_output import task_output
from serving.worker import SCORE_FILE_TASK, SCORE_TASK, LifecycleCelery

router = APIRouter(tags=["async"])

_STATES: dict[str, TaskState] = {
    "PENDING": "pending",
    "RECEIVED": "pending",
    "RETRY": "pending",
    "STARTED": "started",
    "SUCCESS": "success",
    "FAILURE": "failure",
    "REVOKED": "failure",
    "REJECTED": "failure",
    "IGNORED": "failure",
}
_UPLOAD_TYPES = {
    "text/csv": ".csv",
    "application/csv": ".csv",
    "application/vnd.apache.parquet": ".parquet",
    "application/x-parquet": ".parquet",
}


class BrokerUnavailable(LifecycleError):
    status_code = 503


_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Queued; poll the Location (the task's status) for the result",
        "headers": {"Location": {"description": "/tasks/{task_id}", "schema": {"type": "string"}}},
    }
}
_QUEUE_ERRORS = {
    400: schemas.MALFORMED,
    413: schemas.TOO_LARGE,
    415: "Not one of the accepted content types",
    503: "Async scoring not configured, or the broker is unavailable",
}


def _accepted(response: Response, task_id: str, kind: Literal["predict", "batch"]) -> TaskAccepted:
    location = f"/tasks/{task_id}"
    response.headers["Location"] = location
    return TaskAccepted(
        task_id=task_id, request_id=task_id, kind=kind, status="pending", status_url=location
    )


async def send_task(client: LifecycleCelery, name: str, task_id: str, **kwargs: Any) -> None:
    def send() -> None:
        client.send_task(
            name,
            task_id=task_id,
            queue=client.lifecycle_settings.task_queue,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            **kwargs,
        )

    try:
        await run_in_threadpool(send)
    except LifecycleError:
        raise  # the task ledger's own 503
    except Exception as exc:  # kombu raises transport-specific errors
        raise BrokerUnavailable(f"broker unavailable: {type(exc).__name__}: {exc}") from exc


@router.post(
    "/predict/async",
    status_code=202,
    summary="Queue one row or a batch for the worker; poll Location for the result",
    openapi_extra=schemas.body(schemas.PREDICT),
    responses={
        **_ACCEPTED,
        **schemas.error_responses(
            {**_QUEUE_ERRORS, 415: schemas.NOT_JSON, 422: "Input does not fit the model's schema"}
        ),
    },
)
async def predict_async(
    request: Request,
    response: Response,
    settings: SettingsDep,
    holder: HolderDep,
    client: CeleryDep,
) -> TaskAccepted:
    body = await json_body(request, settings.max_body_bytes)
    model = holder.current
    if model is not None:
        # Bad input is refused now with a 4xx, not discovered later as a failed task.
        validation.parse_predict(body, model.schema, settings.max_batch_rows)
    task_id: str = request.state.request_id
    await send_task(client, SCORE_TASK, task_id, args=[task_id, body, "async"])
    return _accepted(response, task_id, "predict")


_UPLOAD = {"type": "string", "format": "binary", "minLength": 1}


@router.post(
    "/batch",
    status_code=202,
    summary="Score a CSV or Parquet file: a path the worker can read, or the file as the body",
    description="A path is checked for its form only: a file that is missing or unreadable on "
    "the worker fails the task, which /tasks/{task_id} then reports.",
    openapi_extra={
        "requestBody": {
            "content": {
                # The JSON branch is validated by this same model in the route.
                "application/json": {"schema": BatchPathRequest.model_json_schema()},
                "text/csv": {"schema": _UPLOAD},
                "application/vnd.apache.parquet": {"schema": _UPLOAD},
            },
            "required": True,
        }
    },
    responses={
        **_ACCEPTED,
        **schemas.error_responses({**_QUEUE_ERRORS, 422: "Invalid path body, or an empty upload"}),
    },
)
async def batch(
    request: Request, response: Response, settings: SettingsDep, client: CeleryDep
) -> TaskAccepted:
    task_id: str = request.state.request_id
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        paths = validated(BatchPathRequest, await json_body(request, settings.max_body_bytes))
        input_path, output_path = paths.path, paths.output_path
    elif ctype in _UPLOAD_TYPES:
        input_path = await _save_upload(request, settings, task_id, _UPLOAD_TYPES[ctype])
        output_path = None
    else:
        raise validation.UnsupportedMediaType(
            f"content type must be application/json (a path) or one of "
            f"{', '.join(_UPLOAD_TYPES)} (the file), got '{ctype or 'none'}'"
        )
    # A job id the server generated is this job's alone: its rows are stamped with the time it
    # was accepted (batch_files.ACCEPTED_AT). A client's id can come again with a retry.
    headers = {} if recheck(request.scope) else accepted_header()
    await send_task(
        client,
        SCORE_FILE_TASK,
        task_id,
        args=[input_path, output_path, "batch"],
        headers=headers,
    )
    return _accepted(response, task_id, "batch")


async def _save_upload(request: Request, settings: Settings, task_id: str, suffix: str) -> str:
    folder = settings.resolved_batch_dir() / "in"
    await run_in_threadpool(folder.mkdir, parents=True, exist_ok=True)
    target = folder / f"{task_id}{suffix}"
    partial = folder / f"{task_id}{suffix}.partial"
    limit = settings.max_upload_bytes
    size = 0
    handle = await run_in_threadpool(partial.open, "wb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise validation.PayloadTooLarge(f"upload exceeds the limit of {limit} bytes")
            await run_in_threadpool(handle.write, chunk)
    except BaseException:
        handle.close()
        partial.unlink(missing_ok=True)
        raise
    handle.close()
    if size == 0:
        partial.unlink(missing_ok=True)
        raise validation.InvalidInput("upload is empty: send the file as the request body")
    os.replace(partial, target)
    return str(target)


TaskId = Annotated[
    str,
    Path(
        pattern=TASK_ID_PATTERN,
        max_length=64,
        description="The task id: the request id /predict/async or /batch answered.",
    ),
]


async def _read_task(client: LifecycleCelery, task_id: str) -> tuple[str, Any]:
    """Celery's state and result (or metadata) for a task this API sent, or NotFound."""

    def read() -> tuple[str, Any]:
        result = client.AsyncResult(task_id)
        state, value = str(result.state), result.result
        # The backend says "pending" for any id it has no record of: a typo would be polled
        # forever. Only then is the ledger asked (a known state proves the id was sent).
        if state == "PENDING" and not client.task_ledger.known(task_id):
            raise NotFound(f"no task with id '{task_id}' was ever sent")
        return state, value

    try:
        return await run_in_threadpool(read)
    except LifecycleError:
        raise
    except Exception as exc:
        raise BrokerUnavailable(f"result backend unavailable: {type(exc).__name__}: {exc}") from exc


def _status(state: str) -> TaskState:
    # A custom state (a task's own update_state, such as PROGRESS) means it is running.
    return _STATES.get(state, "started")


@router.get(
    "/tasks/{task_id}",
    summary="State of an async task: pending, started (with progress), success (with result) "
    "or failure",
    response_model_exclude_unset=True,  # result, error, retrying, progress when they apply
    responses=schemas.error_responses(
        {
            404: "No task was ever sent with this id",
            422: "Not a task id",
            503: "Async scoring not configured, or the result backend is unavailable",
        }
    ),
)
async def task_status(task_id: TaskId, client: CeleryDep) -> TaskStatus:
    state, value = await _read_task(client, task_id)
    status = _status(state)
    details: dict[str, Any] = {}
    if status == "success":
        details["result"] = plain_json(value)
    elif status == "failure":
        details["error"] = _error(value)
    elif state == "RETRY" and isinstance(value, BaseException):
        details["retrying"] = _error(value)
    elif (rows := progress_rows(state, value)) is not None:
        details["progress"] = TaskProgress(rows=rows)
    return TaskStatus(task_id=task_id, status=status, state=state, **details)


_FILE = {"type": "string", "format": "binary"}


@router.get(
    "/batch/{task_id}/output",
    summary="The scored file of a finished /batch task (CSV or Parquet, as an attachment)",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The scored file: the input rows plus request_id, prediction, label, "
            "probability and model_version",
            "content": {
                "text/csv": {"schema": _FILE},
                "application/vnd.apache.parquet": {"schema": _FILE},
            },
        },
        **schemas.error_responses(
            {
                404: "No such task, not finished, failed, or no output file the API serves",
                422: "Not a task id",
                503: "Async scoring not configured, or the result backend is unavailable",
            }
        ),
    },
)
async def batch_output(task_id: TaskId, settings: SettingsDep, client: CeleryDep) -> FileResponse:
    state, value = await _read_task(client, task_id)
    status = _status(state)
    if status == "failure":
        raise NotFound(f"task {task_id} failed: it has no output")
    if status != "success":
        raise NotFound(f"task {task_id} has not finished (it is {status}): no output yet")
    found = await run_in_threadpool(task_output, task_id, value, settings.resolved_batch_dir())
    return FileResponse(found.path, media_type=found.media_type, filename=found.filename)


def _error(value: Any) -> str:
    if isinstance(value, BaseException):
        message = getattr(value, "message", None) or str(value)
        return printable(f"{type(value).__name__}: {message}")
    return printable(str(value))

"""Async scoring over REST: `POST /predict/async`, `POST /batch` and `GET /tasks/{id}`.

The request id becomes the task id, so it is known before the task is sent: a redelivered task
stores its predictions under the same ids (the store skips them), and the client can look the
predictions up (or send /feedback) under the id it got back. The Celery client is built at
start-up with the app's other collaborators; it connects to the broker on the first send.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from serving import validation
from serving.api import schemas
from serving.api.deps import CeleryDep, HolderDep, SettingsDep, json_body
from serving.batch_files import file_format
from serving.worker import SCORE_FILE_TASK, SCORE_TASK, LifecycleCelery

router = APIRouter(tags=["async"])

_STATES = {
    "PENDING": "pending",
    "RECEIVED": "pending",
    "RETRY": "pending",
    "STARTED": "started",
    "SUCCESS": "success",
    "FAILURE": "failure",
    "REVOKED": "failure",
}
_TASK_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_UPLOAD_TYPES = {
    "text/csv": ".csv",
    "application/csv": ".csv",
    "application/vnd.apache.parquet": ".parquet",
    "application/x-parquet": ".parquet",
}


class BrokerUnavailable(LifecycleError):
    status_code = 503


def _accepted(task_id: str, kind: str) -> JSONResponse:
    location = f"/tasks/{task_id}"
    return JSONResponse(
        {
            "task_id": task_id,
            "request_id": task_id,
            "kind": kind,
            "status": "pending",
            "status_url": location,
        },
        status_code=202,
        headers={"Location": location},
    )


async def _send(client: LifecycleCelery, name: str, task_id: str, **kwargs: Any) -> None:
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
    except Exception as exc:  # kombu raises transport-specific errors
        raise BrokerUnavailable(f"broker unavailable: {type(exc).__name__}: {exc}") from exc


@router.post(
    "/predict/async",
    status_code=202,
    summary="Queue one row or a batch for the worker; poll Location for the result",
    openapi_extra=schemas.body(schemas.PREDICT),
    responses=schemas.ERRORS,
)
async def predict_async(
    request: Request, settings: SettingsDep, holder: HolderDep, client: CeleryDep
) -> JSONResponse:
    body = await json_body(request, settings.max_body_bytes)
    model = holder.current
    if model is not None:
        # Bad input is refused now with a 4xx, not discovered later as a failed task.
        validation.parse_predict(body, model.schema, settings.max_batch_rows)
    task_id: str = request.state.request_id
    await _send(client, SCORE_TASK, task_id, args=[task_id, body, "async"])
    return _accepted(task_id, "predict")


@router.post(
    "/batch",
    status_code=202,
    summary="Score a CSV or Parquet file: a path the worker can read, or the file as the body",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string"},
                            "output_path": {"type": "string"},
                        },
                        "required": ["path"],
                    },
                    "example": {"path": "/data/iris.csv"},
                },
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
            "required": True,
        }
    },
    responses=schemas.ERRORS,
)
async def batch(request: Request, settings: SettingsDep, client: CeleryDep) -> JSONResponse:
    task_id: str = request.state.request_id
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        body = await json_body(request, settings.max_body_bytes)
        input_path, output_path = _paths(body)
    elif ctype in _UPLOAD_TYPES:
        input_path = await _save_upload(request, settings, task_id, _UPLOAD_TYPES[ctype])
        output_path = None
    else:
        raise validation.UnsupportedMediaType(
            f"content type must be application/json (a path) or one of "
            f"{', '.join(_UPLOAD_TYPES)} (the file), got '{ctype or 'none'}'"
        )
    await _send(client, SCORE_FILE_TASK, task_id, args=[input_path, output_path, "batch"])
    return _accepted(task_id, "batch")


def _paths(body: Any) -> tuple[str, str | None]:
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not body["path"]:
        raise validation.InvalidInput('body must be {"path": "<CSV or Parquet file>"}')
    unknown = sorted(set(body) - {"path", "output_path"})
    if unknown:
        raise validation.InvalidInput(f"unknown field(s) {', '.join(unknown)}: expected path")
    output = body.get("output_path")
    if output is not None and not isinstance(output, str):
        raise validation.InvalidInput("output_path must be a string")
    path = Path(body["path"])
    if not path.is_absolute():
        raise validation.InvalidInput("path must be absolute (a path the worker can read)")
    file_format(path)
    if output:
        file_format(Path(output))
    return str(path), output


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


@router.get(
    "/tasks/{task_id}",
    summary="State of an async task: pending, started, success (with result) or failure",
    responses=schemas.ERRORS,
)
async def task_status(task_id: str, client: CeleryDep) -> JSONResponse:
    if not _TASK_ID.fullmatch(task_id):
        raise validation.InvalidInput("task id: 1-64 characters of letters, digits and ._:-")

    def read() -> tuple[str, Any]:
        result = client.AsyncResult(task_id)
        return str(result.state), result.result

    try:
        state, value = await run_in_threadpool(read)
    except Exception as exc:
        raise BrokerUnavailable(f"result backend unavailable: {type(exc).__name__}: {exc}") from exc
    status = _STATES.get(state, state.lower())
    content: dict[str, Any] = {"task_id": task_id, "status": status, "state": state}
    if status == "success":
        content["result"] = value
    elif status == "failure":
        content["error"] = _error(value)
    elif state == "RETRY" and isinstance(value, BaseException):
        content["retrying"] = _error(value)
    return JSONResponse(content)


def _error(value: Any) -> str:
    if isinstance(value, BaseException):
        message = getattr(value, "message", None) or str(value)
        return f"{type(value).__name__}: {message}"
    return str(value)

"""Domain errors → HTTP, in one place.

Lifecycle's own endpoints answer `{"detail": "<one line>"}`. The MLflow scoring endpoints
(`/invocations`, `/ping`, `/version`) answer MLflow's body instead, built by MLflow's own
serialiser so its keys follow the installed MLflow: `{"error_code": ..., "message": ...}`
(plus the `sqlstate`/`error_class` MLflow 3 adds). docs/serving.md, "Errors".
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from starlette.exceptions import HTTPException as StarletteHTTPException

from lifecycle.core.errors import LifecycleError
from serving.validation import SchemaMismatch

log = logging.getLogger(__name__)
_LOCATIONS = {"body", "path", "query", "header", "cookie"}


def _response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _lifecycle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LifecycleError)
    return lifecycle_response(exc)


def lifecycle_response(exc: LifecycleError) -> JSONResponse:
    """A domain error on Lifecycle's own endpoints: `{"detail": ...}` with its status."""
    return _response(exc.status_code, exc.message, _error_headers(exc))


def _error_headers(exc: LifecycleError) -> dict[str, str] | None:
    headers = {}
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    # An error that passes (a saturated prediction log) says when to try again.
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers or None


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = tuple(first.get("loc", ()))
    # The field, not where it came from: "label", not "body.label"; "task_id", not "path.task_id".
    if loc and loc[0] in _LOCATIONS:
        loc = loc[1:]
    where = ".".join(str(p) for p in loc)
    return _response(422, f"{where}: {first.get('msg')}" if where else str(first.get("msg")))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _response(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_response(request.method, request.url.path, exc)


def unexpected_response(method: str, path: str, exc: BaseException) -> JSONResponse:
    log.error("unexpected error on %s %s", method, path, exc_info=exc)
    return _response(500, f"internal error ({type(exc).__name__}); see the server log")


# MLflow answers every input it cannot score 400; Lifecycle's 422 is a 400 there too.
_MLFLOW_STATUS = {422: 400}
_MLFLOW_CODES = {
    400: databricks_pb2.BAD_REQUEST,
    413: databricks_pb2.RESOURCE_LIMIT_EXCEEDED,
    415: databricks_pb2.BAD_REQUEST,
    503: databricks_pb2.TEMPORARILY_UNAVAILABLE,
}


def mlflow_error(exc: LifecycleError) -> Response:
    """A domain error in the body `mlflow models serve` answers with."""
    status = _MLFLOW_STATUS.get(exc.status_code, exc.status_code)
    # MLflow words a column mismatch INVALID_PARAMETER_VALUE, any other bad input BAD_REQUEST.
    code = (
        databricks_pb2.INVALID_PARAMETER_VALUE
        if isinstance(exc, SchemaMismatch)
        else _MLFLOW_CODES.get(status, databricks_pb2.INTERNAL_ERROR)
    )
    return _mlflow_response(status, exc.message, code, _error_headers(exc))


def mlflow_unexpected(request: Request, exc: Exception) -> Response:
    return mlflow_unexpected_response(request.method, request.url.path, exc)


def mlflow_unexpected_response(method: str, path: str, exc: BaseException) -> Response:
    log.error("unexpected error on %s %s", method, path, exc_info=exc)
    message = f"internal error ({type(exc).__name__}); see the server log"
    return _mlflow_response(500, message, databricks_pb2.INTERNAL_ERROR)


def _mlflow_response(
    status: int, message: str, code: int, headers: dict[str, str] | None = None
) -> Response:
    body = MlflowException(message, error_code=code).serialize_as_json()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def install(app: FastAPI) -> None:
    app.add_exception_handler(LifecycleError, _lifecycle)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)

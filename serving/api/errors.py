"""Domain errors → HTTP, in one place. Every error body is `{"detail": "<one line>"}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lifecycle.core.errors import LifecycleError

log = logging.getLogger(__name__)
_LOCATIONS = {"body", "path", "query", "header", "cookie"}


def _response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _lifecycle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LifecycleError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return _response(exc.status_code, exc.message, headers)


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
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _response(500, f"internal error ({type(exc).__name__}); see the server log")


def install(app: FastAPI) -> None:
    app.add_exception_handler(LifecycleError, _lifecycle)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)

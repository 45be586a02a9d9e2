"""What routes receive: the app's collaborators and the admin check, as plain types."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionReader, PredictionStore
from lifecycle.core.store.report_index import ReportIndex
from serving.metrics import Metrics
from serving.runtime import ModelHolder, Reconciler
from serving.validation import MAX_BODY_SETTING, PayloadTooLarge, UnsupportedMediaType, loads
from serving.webhooks import Forbidden, Unauthorized, WebhookVerifier
from serving.worker import LifecycleCelery


@dataclass(frozen=True)
class Services:
    """The app's collaborators, built once at start-up (`serving.asgi` or a test)."""

    settings: Settings
    holder: ModelHolder
    reconciler: Reconciler | None
    store: PredictionStore | None
    metrics: Metrics
    verifier: WebhookVerifier | None
    celery: LifecycleCelery | None
    reports: ReportIndex
    predictions: PredictionReader


class AsyncDisabled(LifecycleError):
    status_code = 503


# async: FastAPI runs plain `def` dependencies in a thread pool, a thread hop per request.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


Svc = Annotated[Services, Depends(get_services)]


async def get_settings(services: Svc) -> Settings:
    return services.settings


async def get_holder(services: Svc) -> ModelHolder:
    return services.holder


async def get_store(services: Svc) -> PredictionStore | None:
    return services.store


async def get_metrics(services: Svc) -> Metrics:
    return services.metrics


async def get_celery(services: Svc) -> LifecycleCelery:
    if services.celery is None:
        raise AsyncDisabled("async scoring is not configured on this server")
    return services.celery


async def get_reports(services: Svc) -> ReportIndex:
    return services.reports


async def get_predictions(services: Svc) -> PredictionReader:
    return services.predictions


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
StoreDep = Annotated[PredictionStore | None, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
CeleryDep = Annotated[LifecycleCelery, Depends(get_celery)]
ReportsDep = Annotated[ReportIndex, Depends(get_reports)]
PredictionsDep = Annotated[PredictionReader, Depends(get_predictions)]


async def require_admin(request: Request, settings: SettingsDep) -> None:
    token = settings.admin_token
    if token is None or not token.get_secret_value():
        raise Forbidden("admin endpoints are disabled: set LIFECYCLE_ADMIN_TOKEN to enable them")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("admin token required: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise Forbidden("admin token is wrong")


Admin = Depends(require_admin)


async def json_body(request: Request, limit: int) -> Any:
    """The body as JSON: 415 for another content type, 413 over the limit, 400 if malformed."""
    _, parsed = await read_json(request, limit)
    return parsed


async def read_json(request: Request, limit: int) -> tuple[bytes, Any]:
    check_json_type(request.headers.get("content-type"))
    body = await read_limited(request, limit)
    return body, loads(body)


def check_json_type(content_type: str | None) -> None:
    """Lifecycle's JSON routes take application/json only: 415 for anything else."""
    ctype = content_type or ""
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"content type must be application/json, got '{ctype or 'none'}'"
        )


async def read_limited(request: Request, limit: int) -> bytes:
    check_declared_size(request.headers.get("content-length"), limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size = _check_size(size + len(chunk), limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_limited(scope: Scope, receive: Receive, limit: int) -> bytes:
    """`read_limited` for a raw ASGI handler: the same limits and messages, no Request."""
    check_declared_size(header(scope, b"content-length"), limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size = _check_size(size + len(chunk), limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def check_declared_size(declared: str | None, limit: int) -> None:
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; {_body_limit(limit)}")


def _check_size(size: int, limit: int) -> int:
    if size > limit:
        raise PayloadTooLarge(f"request body is over {limit} bytes; {_body_limit(limit)}")
    return size


# The request state's flag (set by `RequestContext`): the request id came from the client.
CLIENT_REQUEST_ID = "client_request_id"


def recheck(scope: Scope) -> bool:
    """Whether the request's rows need the prediction log's request-id lookup
    (PredictionRecord.recheck): yes unless the server generated the request id."""
    return scope.get("state", {}).get(CLIENT_REQUEST_ID, True) is not False


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower-case, as servers pass names), as Starlette's
    `request.headers.get` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _body_limit(limit: int) -> str:
    return f"the limit is {limit}: set {MAX_BODY_SETTING} to accept more"


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], body: Any) -> Model:
    """A parsed JSON body as `model`, refused like a declared body parameter would be."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


class JsonBodyRoute(APIRoute):
    """A route with a Pydantic body reads it by the API's rules before FastAPI validates it.

    FastAPI alone would read any size, take NaN, and answer 422 for a wrong content type or
    broken JSON; the hand-parsed routes answer 413, 415 and 400. Reading the body here as
    `json_body` does keeps one contract for every JSON route.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def read_then_handle(request: Request) -> Response:
            services: Services = request.app.state.services
            raw, parsed = await read_json(request, services.settings.max_body_bytes)
            return await handler(_ReadRequest(request.scope, request.receive, raw, parsed))

        return read_then_handle


class _ReadRequest(Request):
    """A request whose body was already read (and parsed) by `JsonBodyRoute`."""

    def __init__(self, scope: Scope, receive: Receive, raw: bytes, parsed: Any) -> None:
        super().__init__(scope, receive)
        self._raw = raw
        self._parsed = parsed

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._parsed

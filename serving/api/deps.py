"""What routes receive: the app's collaborators and the admin check, as plain types."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionStore
from serving.metrics import Metrics
from serving.runtime import ModelHolder, Reconciler
from serving.validation import PayloadTooLarge, UnsupportedMediaType, loads
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


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
StoreDep = Annotated[PredictionStore | None, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
CeleryDep = Annotated[LifecycleCelery, Depends(get_celery)]


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
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"content type must be application/json, got '{ctype or 'none'}'"
        )
    body = await read_limited(request, limit)
    return loads(body)


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)

"""The app factory: `create_app(settings, holder, store, ...)` takes its collaborators.

Nothing here reads the environment or loads a model; `serving.asgi` composes the real
collaborators, tests may compose their own.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionReader, PredictionStore
from lifecycle.core.store.promotions import PromotionLog
from lifecycle.core.store.report_index import ReportIndex
from serving.api import (
    errors,
    routes,
    routes_admin,
    routes_async,
    routes_history,
    routes_ops,
    routes_registry,
    routes_reports,
)
from serving.api.deps import CLIENT_REQUEST_ID, Services, header
from serving.api.fast import FastScoring, Handler
from serving.api.models import TASK_ID_PATTERN
from serving.api.startup import Drain, ProcessState, load_before_serving
from serving.metrics import Metrics
from serving.runtime import ModelHolder, Reconciler
from serving.webhooks import SqlDeliveryLog, WebhookVerifier
from serving.worker import LifecycleCelery

log = logging.getLogger(__name__)
# A client's X-Request-Id becomes the task id of /predict/async and /batch: the same rule.
_CLIENT_ID = re.compile(TASK_ID_PATTERN)


def create_app(
    settings: Settings,
    holder: ModelHolder,
    store: PredictionStore | None = None,
    *,
    reconciler: Reconciler | None = None,
    metrics: Metrics | None = None,
    celery: LifecycleCelery | None = None,
    reports: ReportIndex | None = None,
    predictions: PredictionReader | None = None,
    promotions: PromotionLog | None = None,
    fast_scoring: bool = True,
) -> FastAPI:
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    metrics = metrics or Metrics()
    # Connects on first use (a /reports request or a scrape), not here.
    reports = reports or ReportIndex(settings.resolved_database_url())
    metrics.watch_reports(reports, settings.report_interval)
    # The retrain pipeline's outcomes (refused automatic promotions alert), read at scrape time.
    promotions = promotions or PromotionLog(settings.resolved_database_url())
    metrics.watch_promotions(promotions, holder.target.name)
    # The history endpoints' reader: its own engine (no writes), also connected on first use.
    predictions = predictions or PredictionReader(settings.resolved_database_url())
    services = Services(
        settings=settings,
        holder=holder,
        reconciler=reconciler,
        store=store,
        metrics=metrics,
        verifier=(
            WebhookVerifier(secret, SqlDeliveryLog(settings.resolved_database_url()))
            if secret
            else None
        ),
        celery=celery,
        reports=reports,
        predictions=predictions,
    )

    process = ProcessState()
    drain = Drain(process, settings.shutdown_grace_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None:
            store.start()
        if reconciler is not None:
            # Without a reconciler (tests composing their own) the caller loads the model.
            await load_before_serving(holder, settings.startup_model_timeout, process)
            reconciler.start()
        drain.install()
        try:
            yield
        finally:
            drain.uninstall()
            if reconciler is not None:
                reconciler.stop()
            if store is not None:
                store.flush(5.0)
                store.stop()
            services.reports.dispose()
            services.predictions.dispose()
            promotions.dispose()

    app = LifecycleAPI(
        title="Lifecycle scoring API",
        version="1.0",
        description="Scores with the registry's current model and follows its transitions.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.process = process
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(routes_ops.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_async.router)
    app.include_router(routes_reports.router)
    app.include_router(routes_history.router)
    app.include_router(routes_registry.router)
    fast = FastScoring(services).routes if fast_scoring else {}
    app.context = RequestContext(app.framework, services.metrics, process, fast)
    return app


class LifecycleAPI(FastAPI):
    """FastAPI with one plain-ASGI layer in front of everything: `RequestContext`.

    It sits outside FastAPI's own middleware (rather than added with `add_middleware`) so
    that the scoring fast path skips all of it, and so that every answer, a 500 from the
    framework's error middleware included, carries the request id.
    """

    context: RequestContext | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.context is not None:
            await self.context(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


class RequestContext:
    """Request id (header in, header out), request metrics, connection close while draining,
    and the fast scoring handlers (`serving.api.fast`) for their paths."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        process: ProcessState,
        fast: Mapping[str, Handler] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.process = process
        self.fast = dict(fast or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, b"x-request-id")
        client_id = bool(given and _CLIENT_ID.fullmatch(given))
        request_id = given if given and client_id else _new_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        # A client's id can come again with a retry, scored at another time; the server's
        # never does, so its rows skip the prediction log's request-id lookup.
        state[CLIENT_REQUEST_ID] = client_id
        extra = [(b"x-request-id", request_id.encode())]
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.process.draining:
                    # uvicorn then closes the connection after this answer: no idle
                    # keep-alive connection is left to be reset when the server stops.
                    extra.append((b"connection", b"close"))
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        # A mounted app (root_path) is routed by the framework, which knows how to strip it.
        handler = None
        if scope["method"] == "POST" and not scope.get("root_path"):
            handler = self.fast.get(scope["path"])
        try:
            if handler is not None:
                endpoint = scope["path"]
                await handler(scope, receive, send_with_id, request_id)
            else:
                endpoint = ""
                await self.app(scope, receive, send_with_id)
        finally:
            if not endpoint:
                route = scope.get("route")
                endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                endpoint, scope["method"], status, time.perf_counter() - started
            )


def _new_id() -> str:
    # Unique, not secret: uuid4 reads the OS entropy pool on every call, this does not.
    return f"{random.getrandbits(128):032x}"

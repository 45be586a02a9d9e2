"""After a promotion: wait until the API and the worker serve the new version, then for the
first prediction it makes; both recorded on the version's automatic promotion row."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from lifecycle.core.config import RetrainConfig
from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from lifecycle.core.store.promotions import PromotionLog
from lifecycle.core.store.read import PredictionReader
from pipelines.api import ServiceUnreachable, api_version, worker_version
from registry.stages import normalize_stage

POLL_SECONDS = 0.5


class NotServedInTime(LifecycleError):
    status_code = 504


def wait_until_served(
    settings: Settings, config: RetrainConfig, model_name: str, version: str, stage: str
) -> dict[str, Any]:
    followed = normalize_stage(settings.model_stage)
    if normalize_stage(stage) != followed:
        message = f"v{version} went to {stage}; the API and the worker serve {followed}"
        print(message)
        return {"skipped": message}
    metrics_url = settings.resolved_worker_metrics_url()
    started = time.monotonic()
    deadline = started + config.serve_timeout
    api: str | None = None
    worker: str | None = None
    with httpx.Client(base_url=settings.resolved_api_url(), timeout=5.0) as client:
        while True:
            api = _ask(lambda: api_version(client), api)
            if metrics_url is None:
                worker = "not watched"
            else:
                worker = _ask(lambda: worker_version(client, metrics_url, model_name), worker)
            if api == version and worker in (version, "not watched"):
                break
            if time.monotonic() >= deadline:
                raise NotServedInTime(
                    f"{model_name} v{version} not served after {config.serve_timeout:g}s "
                    f"(retrain.serve_timeout): the API serves v{api}, the worker v{worker}"
                )
            time.sleep(POLL_SECONDS)
    seconds = round(time.monotonic() - started, 2)
    if metrics_url is None:
        print("the worker's served version is not watched (LIFECYCLE_WORKER_METRICS_PORT=0)")
    print(f"{model_name} v{version} served by the API and the worker after {seconds}s")
    log = PromotionLog(settings.resolved_database_url())
    try:
        if not log.mark_served(model_name, version, datetime.now(UTC)):
            print(f"no automatic promotion of {model_name} v{version} recorded: served_at not kept")
    finally:
        log.dispose()
    return {"api_version": api, "worker_version": worker, "seconds": seconds}


def _ask(read: Callable[[], str | None], last: str | None) -> str | None:
    """A service that does not answer this time keeps its last known version."""
    try:
        return read()
    except ServiceUnreachable:
        return last


def first_prediction(
    settings: Settings, config: RetrainConfig, model_name: str, version: str
) -> dict[str, Any]:
    log = PromotionLog(settings.resolved_database_url())
    reader = PredictionReader.from_settings(settings)
    try:
        deadline = time.monotonic() + config.first_prediction_wait
        while True:
            found = reader.first(model_name, version)
            if found is not None or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        if found is None:
            print(
                f"no prediction by {model_name} v{version} within "
                f"{config.first_prediction_wait:g}s (retrain.first_prediction_wait)"
            )
            return {"request_id": None}
        request_id, created_at = found
        log.mark_first_prediction(model_name, version, request_id)
    finally:
        reader.dispose()
        log.dispose()
    print(f"first prediction by {model_name} v{version}: {request_id} at {created_at.isoformat()}")
    return {"request_id": request_id, "created_at": created_at.isoformat()}

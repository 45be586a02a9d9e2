"""What the pipeline tasks ask the running Lifecycle services over HTTP: the API's served model
and the worker's (from its Prometheus /metrics), as any client would."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lifecycle.core.errors import LifecycleError

MODEL_INFO = "lifecycle_model_info"


class ServiceUnreachable(LifecycleError):
    """The API or the worker did not answer: one line naming which and where."""

    status_code = 503


def api_version(client: httpx.Client) -> str | None:
    """The version the API serves now (GET /model), None while it serves none (503)."""
    try:
        response = client.get("/model")
    except httpx.TransportError as exc:
        raise ServiceUnreachable(
            f"API unreachable at {client.base_url} ({type(exc).__name__})"
        ) from exc
    if response.status_code != 200:
        return None
    body: dict[str, Any] = response.json()
    return str(body["version"])


def worker_version(client: httpx.Client, metrics_url: str, model_name: str) -> str | None:
    """The version of `model_name` the worker serves now: its model-info series at 1."""
    try:
        response = client.get(metrics_url)
    except httpx.TransportError as exc:
        raise ServiceUnreachable(
            f"worker metrics unreachable at {metrics_url} ({type(exc).__name__})"
        ) from exc
    if response.status_code != 200:
        return None
    return served_version(response.text, model_name)


def served_version(exposition: str, model_name: str) -> str | None:
    """The version a Prometheus text exposition says is served (model info at 1); the newest
    when a process shows several."""
    versions = [
        sample.labels["version"]
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == MODEL_INFO
        and sample.value == 1
        and sample.labels.get("name") == model_name
    ]
    if not versions:
        return None
    return max(versions, key=lambda v: (int(v) if v.isdigit() else -1, v))

"""The UI's client for Lifecycle's API: every call over HTTP, every failure one `UiError`.

A page never sees an httpx exception or a status code: it gets the JSON answer, or a
`UiError` whose message is one sentence a person can act on (the API's own `detail` for a
4xx/5xx, "not reachable" when nothing answers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ui import metrics

Json = dict[str, Any]
Params = Mapping[str, str | int | float | None]


class UiError(Exception):
    """What a page shows instead of its data: `message` is one sentence; `status` and `body`
    are the API's answer when there was one (a refused promotion's gate table is in `body`)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


def _detail(response: httpx.Response) -> tuple[str, Any]:
    """The API's `detail` as it says it; anything else (a proxy's HTML page) as its status."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().splitlines()
        return (
            f"HTTP {response.status_code}: {text[0][:200] if text else response.reason_phrase}",
            None,
        )
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail, body
    if isinstance(detail, list):
        # FastAPI's own validation list: "field: message" for each entry.
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", ())[1:])
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg")))
        if parts:
            return "; ".join(parts), body
    return f"HTTP {response.status_code}: {response.reason_phrase}", body


@dataclass
class ApiClient:
    """Lifecycle's REST API at `base_url`; one call waits at most `timeout` seconds."""

    base_url: str
    timeout: float

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            response = self._http.request(
                method,
                path,
                params=query,
                json=json,
                content=content,
                headers=dict(headers or {}),
                timeout=timeout or self.timeout,
            )
        except httpx.TimeoutException as exc:
            raise UiError(
                f"The API at {self.base_url} is not reachable (no answer in "
                f"{timeout or self.timeout:g} s: {type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise UiError(f"The API at {self.base_url} is not reachable ({reason})") from exc
        if response.status_code >= 400:
            message, body = _detail(response)
            raise UiError(message, status=response.status_code, body=body)
        return response

    def get_json(self, path: str, params: Params | None = None) -> Json:
        return _object(self.request("GET", path, params=params))

    def post_json(
        self, path: str, body: Any = None, token: str | None = None, timeout: float | None = None
    ) -> Json:
        return _object(
            self.request("POST", path, json=body, headers=_bearer(token), timeout=timeout)
        )

    # -- operations ------------------------------------------------------------------------

    def model(self) -> Json:
        return self.get_json("/model")

    def health(self) -> Json:
        return self.get_json("/health")

    def ready(self) -> Json:
        """`/ready` answers 503 with the same body while no model is loaded: both are data."""
        try:
            return self.get_json("/ready")
        except UiError as exc:
            if exc.status == 503 and isinstance(exc.body, dict) and "status" in exc.body:
                return exc.body
            raise

    def metrics_text(self) -> str:
        return self.request("GET", "/metrics").text

    def model_history(self) -> Json:
        return self.get_json("/model/history")

    def reload_model(self, token: str) -> Json:
        return self.post_json("/reload_model", token=token)

    # -- scoring ---------------------------------------------------------------------------

    def predict(self, features: Mapping[str, Any]) -> Json:
        return self.post_json("/predict", {"features": dict(features)})

    def feedback(self, request_id: str, label: str) -> Json:
        return self.post_json("/feedback", {"request_id": request_id, "label": label})

    def batch_upload(self, data: bytes, content_type: str = "text/csv") -> Json:
        response = self.request(
            "POST", "/batch", content=data, headers={"content-type": content_type}
        )
        return _object(response)

    def task(self, task_id: str) -> Json:
        return self.get_json(f"/tasks/{task_id}")

    def batch_output(self, task_id: str) -> bytes:
        return self.request("GET", f"/batch/{task_id}/output").content

    # -- history ---------------------------------------------------------------------------

    def predictions(self, params: Params) -> Json:
        return self.get_json("/predictions", params)

    def prediction_stats(self, params: Params) -> Json:
        return self.get_json("/predictions/stats", params)

    def predictions_csv(self, params: Params) -> bytes:
        return self.request("GET", "/predictions.csv", params=params).content

    # -- reports ---------------------------------------------------------------------------

    def reports(self, params: Params | None = None) -> Json:
        return self.get_json("/reports", params)

    def latest_report(self, model: str | None = None) -> Json | None:
        """The newest report, or None when the model has none yet (the API's 404)."""
        try:
            return self.get_json("/reports/latest", {"model": model})
        except UiError as exc:
            if exc.status == 404:
                return None
            raise

    def report(self, report_id: str) -> Json:
        return self.get_json(f"/reports/{report_id}")

    def report_html(self, report_id: str) -> str:
        return self.request("GET", f"/reports/{report_id}.html").text

    def run_report(self, token: str, body: Mapping[str, Any] | None = None) -> Json:
        return self.post_json("/reports", dict(body or {}), token=token)

    # -- registry actions ------------------------------------------------------------------

    def registry_gates(self, token: str, name: str, version: str, stage: str) -> Json:
        body = {"name": name, "version": version, "stage": stage}
        return self.post_json("/registry/gates", body, token=token, timeout=self._slow())

    def registry_promote(
        self, token: str, name: str, version: str, stage: str, reason: str | None, force: bool
    ) -> Json:
        body = {"name": name, "version": version, "stage": stage, "reason": reason, "force": force}
        return self.post_json("/registry/promote", body, token=token, timeout=self._slow())

    def registry_rollback(self, token: str, name: str, reason: str | None) -> Json:
        body = {"name": name, "reason": reason}
        return self.post_json("/registry/rollback", body, token=token, timeout=self._slow())

    def _slow(self) -> float:
        # Gates score the candidate on held-out data and promotion takes the registry lock:
        # seconds, not the milliseconds of a read.
        return max(self.timeout, 120.0)


def _bearer(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def _object(response: httpx.Response) -> Json:
    try:
        body = response.json()
    except ValueError as exc:
        raise UiError(
            f"The API answered {response.request.url.path} with something that is not JSON"
        ) from exc
    if not isinstance(body, dict):
        raise UiError(f"The API answered {response.request.url.path} with an unexpected shape")
    return body


def worker_models(url: str, timeout: float) -> list[dict[str, str]]:
    """The versions the Celery worker serves, from its Prometheus endpoint at `url`."""
    try:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise UiError(
            f"The worker's metrics at {url} are not reachable ({str(exc) or type(exc).__name__})"
        ) from exc
    return metrics.served_models(metrics.parse(response.text))

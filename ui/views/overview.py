"""Overview: which version each scoring path serves, health, traffic and the latest drift."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from ui import metrics
from ui.client import UiError, worker_models
from ui.context import UiContext
from ui.widgets import show, when

SNAPSHOT_KEY = "overview:snapshot"
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def render(ctx: UiContext) -> None:
    _links(ctx)
    model = ctx.api.model()
    ready = ctx.api.ready()
    health = ctx.api.health()

    st.subheader("Served model")
    api_col, worker_col = st.columns(2)
    with api_col:
        st.markdown("**API**")
        st.metric("version", model["version"])
        st.write(
            {
                "name": model["name"],
                "stage": model.get("stage"),
                "alias": model.get("alias"),
                "run_id": model.get("run_id"),
                "loaded_at": when(model.get("loaded_at")),
                "following": model.get("following", {}).get("target"),
            }
        )
    with worker_col:
        st.markdown("**Celery worker**")
        _worker(ctx)

    st.subheader("Health")
    details = ready.get("details", {})
    cols = st.columns(4)
    cols[0].metric("live", health.get("status", "?"))
    cols[1].metric("ready", ready.get("status", "?"))
    cols[2].metric("registry", details.get("registry") or "?")
    cols[3].metric("prediction store", details.get("store") or "?")
    problems = {
        k: details[k]
        for k in ("registry_error", "last_error", "failed_version", "startup_error", "store_error")
        if details.get(k)
    }
    if details.get("stale"):
        problems["stale"] = (
            f"serving a version the target no longer points at ({details.get('target_version')})"
        )
    if problems:
        st.warning("; ".join(f"{k}: {v}" for k, v in problems.items()))

    st.subheader("Traffic (scoring endpoints)")
    _traffic(ctx.api.metrics_text())

    st.subheader("Latest drift report")
    report = ctx.api.latest_report(model["name"])
    if report is None:
        st.info(f"No drift report for {model['name']} yet.")
    else:
        cols = st.columns(4)
        cols[0].metric("verdict", report["verdict"].replace("_", " "))
        cols[1].metric("drift share", f"{report['drift_share']:.0%}")
        cols[2].metric("version", report["model_version"])
        cols[3].metric("rows", report["rows"])
        st.caption(f"report {report['id']} made at {when(report['created_at'])} UTC")


def _links(ctx: UiContext) -> None:
    settings = ctx.settings
    links = [
        # What a browser opens, which need not be what this process calls (compose).
        f"[MLflow]({settings.resolved_public_mlflow_url()})",
        f"[API docs]({settings.resolved_public_api_url()}/docs)",
    ]
    if settings.grafana_url:
        links.append(f"[Grafana]({settings.grafana_url})")
    st.markdown(" · ".join(links))


def _worker(ctx: UiContext) -> None:
    url = ctx.settings.resolved_worker_metrics_url()
    if not url:
        st.info("The worker's metrics are off (LIFECYCLE_WORKER_METRICS_PORT=0).")
        return
    try:
        served = worker_models(url, ctx.settings.ui_timeout)
    except UiError as exc:
        st.warning(exc.message)
        return
    if not served:
        st.info("The worker has no model loaded yet.")
        return
    for info in served:
        st.metric("version", info.get("version", "?"))
        st.write({k: info.get(k) for k in ("name", "stage", "alias", "run_id")})


def _traffic(text: str) -> None:
    now = metrics.snapshot(metrics.parse(text), time.time())
    before: metrics.Snapshot | None = st.session_state.get(SNAPSHOT_KEY)
    st.session_state[SNAPSHOT_KEY] = now
    rates = metrics.rates(before, now) if before else None
    cols = st.columns(3 + len(QUANTILES))
    if rates is None:
        cols[0].metric("requests/s", "n/a")
        cols[1].metric("errors (5xx)", "n/a")
        cols[2].metric("refused (4xx)", "n/a")
        note = (
            "First read: rates need a second one (Refresh). "
            if before is None
            else "The API restarted since the last read: rates start again. "
        )
    else:
        cols[0].metric("requests/s", f"{rates.requests_per_second:.2f}")
        cols[1].metric("errors (5xx)", _share(rates.error_share))
        cols[2].metric("refused (4xx)", _share(rates.refused_share))
        note = f"Rates over the {rates.seconds:.0f} s since the last read. "
    interval = metrics.bucket_delta(before, now) if before and rates else None
    buckets = interval if interval and max(interval.values(), default=0) > 0 else now.buckets
    scope = "that interval" if buckets is interval else "since the API started"
    for col, (name, q) in zip(cols[3:], QUANTILES, strict=True):
        value = metrics.quantile(q, buckets)
        col.metric(f"latency {name}", "n/a" if value is None else f"{value * 1000:.1f} ms")
    st.caption(
        f"{note}Latency percentiles over {scope}, estimated from the histogram's buckets; "
        f"{now.total:.0f} scoring requests in total."
    )


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    show("Overview", render)

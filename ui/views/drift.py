"""Drift: the reports with their verdicts, drift share over time, one report's features and
its Evidently page, and a report made now (admin token)."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st
import streamlit.components.v1 as components

from ui.client import Json, UiError
from ui.context import UiContext
from ui.widgets import admin_token, attempt, show, when

REPORTS_SHOWN = 200
TASK_KEY = "drift:task"
# A report reads the window and runs Evidently: seconds to a minute.
REPORT_WAIT_SECONDS = 120.0


def render(ctx: UiContext) -> None:
    name = ctx.model_name
    _run_now(ctx, name)

    reports = ctx.api.reports({"model": name, "limit": REPORTS_SHOWN})["reports"]
    st.subheader(f"Reports of {name}")
    if not reports:
        st.info(f"No report for {name} yet: run one below, or `lifecycle drift`.")
        return
    table = pd.DataFrame(
        [
            {
                "made (UTC)": when(r["created_at"]),
                "version": r["model_version"],
                "verdict": r["verdict"],
                "drift share": r["drift_share"],
                "drifted features": ", ".join(r["drifted_features"]),
                "rows": r["rows"],
                "labelled": r["labelled_rows"],
                "id": r["id"],
            }
            for r in reports
        ]
    )
    st.dataframe(table, hide_index=True)

    st.markdown("**Drift share over time, by version**")
    over_time = pd.DataFrame(
        {
            "made": pd.to_datetime([r["created_at"] for r in reports], utc=True),
            "version": [r["model_version"] for r in reports],
            "drift share": [r["drift_share"] for r in reports],
        }
    )
    st.line_chart(over_time, x="made", y="drift share", color="version")

    labels = {
        r["id"]: f"{when(r['created_at'])} · v{r['model_version']} · {r['verdict']}"
        for r in reports
    }
    chosen = st.selectbox(
        "Report", list(labels), format_func=labels.__getitem__, key="drift:report"
    )
    _report(ctx, ctx.api.report(chosen))


def _report(ctx: UiContext, report: Json) -> None:
    cols = st.columns(4)
    cols[0].metric("verdict", report["verdict"].replace("_", " "))
    cols[1].metric("drift share", f"{report['drift_share']:.0%}")
    cols[2].metric("rows", report["rows"])
    cols[3].metric("reference rows", report["reference_rows"])
    st.dataframe(pd.DataFrame(report["features"]), hide_index=True)
    if report.get("quality"):
        with st.expander("Live quality in this window"):
            st.json(report["quality"])
    with st.expander("The Evidently report", expanded=True):
        html = attempt(lambda: ctx.api.report_html(report["id"]))
        if html:
            components.html(html, height=900, scrolling=True)


def _run_now(ctx: UiContext, name: str) -> None:
    with st.expander("Run a report now"):
        with st.form("drift:run"):
            since = st.text_input(
                "Window: since (e.g. 2h, 7d, or an ISO time; empty: the last predictions)",
                key="drift:since",
            )
            token = admin_token("drift:token")
            run = st.form_submit_button("Run a report now")
        if run:
            body = {"model": name, "since": since.strip() or None}
            try:
                accepted = ctx.api.run_report(token, body)
            except UiError as exc:
                st.error(exc.message)
                return
            st.session_state[TASK_KEY] = _wait(ctx, accepted["task_id"])
        outcome: Json | None = st.session_state.get(TASK_KEY)
        if outcome:
            _task_outcome(outcome)


def _wait(ctx: UiContext, task_id: str) -> Json:
    deadline = time.monotonic() + REPORT_WAIT_SECONDS
    status: Json = {"task_id": task_id, "status": "pending"}
    with st.spinner(f"task {task_id}: making the report…"):
        while time.monotonic() < deadline:
            status = ctx.api.task(task_id)
            if status["status"] in ("success", "failure"):
                break
            time.sleep(0.5)
    return status


def _task_outcome(status: Json) -> None:
    task_id = status["task_id"]
    if status["status"] == "success":
        report = status.get("result") or {}
        st.success(
            f"Report {report.get('id')} made (task {task_id}): "
            f"{str(report.get('verdict', '')).replace('_', ' ')}, drift share "
            f"{report.get('drift_share', 0):.0%} over {report.get('rows')} rows."
        )
    elif status["status"] == "failure":
        st.error(f"The report was not made (task {task_id}): {status.get('error')}")
    else:
        st.info(f"Task {task_id} is still {status['status']}: Refresh to see its report.")


if __name__ == "__main__":
    show("Drift", render)

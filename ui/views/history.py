"""History & Analytics: the prediction log filtered and paged, its aggregates as charts (all
computed by the API in the database), a CSV export and a feedback form."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from ui.client import Json, Params
from ui.context import UiContext
from ui.paging import CursorStack
from ui.widgets import attempt, show, when

RANGES = {
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
}
CUSTOM = "Custom"
ALL = "All"
SOURCES = (ALL, "rest", "async", "batch")
PAGE_ROWS = 50
CSV_ROWS = 10_000
STACK_KEY = "history:cursors"
CSV_KEY = "history:csv_data"


def render(ctx: UiContext) -> None:
    model = ctx.api.model()
    name = str(model["name"])

    cols = st.columns(4)
    choice = cols[0].selectbox("Time range", [*RANGES, CUSTOM], index=1, key="history:range")
    since, until, span_key = _range(choice, cols[0])
    stats = ctx.api.prediction_stats({"model": name, "since": _iso(since), "until": _iso(until)})
    shown_until = until or datetime.fromisoformat(str(stats["until"]).replace("Z", "+00:00"))
    versions = sorted(
        {str(r["model_version"]) for r in stats["classes"]} | {str(model["version"])},
        key=_version_order,
    )
    version = cols[1].selectbox("Version", [ALL, *versions], key="history:version")
    source = cols[2].selectbox("Source", SOURCES, key="history:source")
    label = cols[3].selectbox("Predicted class", [ALL, *model["class_labels"]], key="history:label")
    filters: dict[str, str | None] = {
        "model": name,
        "since": _iso(since),
        "until": _iso(until),
        "version": None if version == ALL else version,
        "source": None if source == ALL else source,
        "label": None if label == ALL else label,
    }
    st.caption(
        f"{name}, {when(_iso(since))} to {when(_iso(shown_until))} UTC; aggregates read at "
        f"{when(stats.get('read_at'))} UTC"
    )

    _charts(stats)
    _rows(ctx, filters, "|".join([span_key, str(version), str(source), str(label)]))
    _feedback(ctx, [str(c) for c in model["class_labels"]])


def _range(choice: str, col: Any) -> tuple[datetime, datetime | None, str]:
    """Since and until of the choice; until is None for "up to now" (the API's default), so
    a prediction made in this very second is not cut off."""
    now = datetime.now(UTC).replace(microsecond=0)
    if choice != CUSTOM:
        return now - RANGES[choice], None, choice
    today = now.date()
    picked = col.date_input(
        "From, to (UTC days)", value=(today - timedelta(days=1), today), key="history:days"
    )
    first, last = (picked, picked) if isinstance(picked, date) else (picked[0], picked[-1])
    since = datetime.combine(first, time(), UTC)
    until = datetime.combine(last, time(), UTC) + timedelta(days=1)
    return since, until, f"{CUSTOM}:{first}:{last}"


def _charts(stats: Json) -> None:
    volume = pd.DataFrame(stats["volume"])
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Predictions per {stats['bucket_seconds']} s, by version**")
        if volume.empty:
            st.info("No predictions in this range.")
        else:
            volume["bucket"] = pd.to_datetime(volume["bucket"], utc=True)
            st.bar_chart(volume, x="bucket", y="count", color="model_version")
    with right:
        st.markdown("**Predicted classes, by version**")
        classes = pd.DataFrame(stats["classes"])
        if classes.empty:
            st.info("No predictions in this range.")
        else:
            classes["label"] = classes["label"].fillna("(none)")
            st.bar_chart(classes, x="label", y="count", color="model_version", stack=False)

    left, right = st.columns(2)
    with left:
        st.markdown("**Latency percentiles (ms), by version**")
        latency = pd.DataFrame(stats["latency"])
        if latency.empty:
            st.info("No latencies in this range.")
        else:
            st.dataframe(latency, hide_index=True)
            long = latency.melt(
                id_vars="model_version",
                value_vars=["p50", "p90", "p95", "p99"],
                var_name="percentile",
            )
            st.bar_chart(long, x="percentile", y="value", color="model_version", stack=False)
    with right:
        st.markdown("**Live quality from feedback, by version**")
        quality = pd.DataFrame(stats["quality"])
        if quality.empty:
            st.info("No feedback in this range.")
        else:
            st.dataframe(quality, hide_index=True)
            scores = [c for c in ("accuracy", "precision") if c in quality.columns]
            long = quality.melt(id_vars="model_version", value_vars=scores, var_name="score")
            st.bar_chart(long, x="score", y="value", color="model_version", stack=False)


def _rows(ctx: UiContext, filters: dict[str, str | None], key: str) -> None:
    st.subheader("Predictions")
    stack: CursorStack = st.session_state.setdefault(STACK_KEY, CursorStack())
    stack.reset(key)
    params: Params = {**filters, "limit": PAGE_ROWS, "before": stack.before}
    page = ctx.api.predictions(params)
    rows = page["predictions"]
    if rows:
        st.dataframe(_table(rows), hide_index=True)
    else:
        st.info("No predictions match these filters.")
    left, middle, right = st.columns([1, 1, 4])
    left.button("Previous", on_click=stack.previous, disabled=stack.page == 0, key="history:prev")
    middle.button(
        "Next",
        on_click=stack.next,
        args=(page.get("next"),),
        disabled=not page.get("next"),
        key="history:next",
    )
    right.caption(f"page {stack.page + 1}, {len(rows)} rows, newest first")

    csv: dict[str, Any] | None = st.session_state.get(CSV_KEY)
    if st.button(f"Prepare a CSV of the filtered rows (up to {CSV_ROWS:,})", key="history:csv"):
        data = attempt(lambda: ctx.api.predictions_csv({**filters, "limit": CSV_ROWS}))
        csv = {"key": key, "data": data} if data is not None else None
        st.session_state[CSV_KEY] = csv
    if csv and csv["key"] == key:
        st.download_button(
            "Download CSV",
            data=csv["data"],
            file_name=f"{filters['model']}-predictions.csv",
            mime="text/csv",
            key="history:download",
        )


def _table(rows: list[Json]) -> pd.DataFrame:
    out = []
    for r in rows:
        probabilities = r.get("probabilities") or {}
        top = max((v for v in probabilities.values() if v is not None), default=None)
        out.append(
            {
                "time (UTC)": when(r["created_at"]),
                "request id": r["request_id"],
                "source": r["source"],
                "version": r["model_version"],
                "class": r.get("label"),
                "probability": top,
                "latency ms": r.get("latency_ms"),
                "feedback": r.get("feedback"),
                "features": json.dumps(r.get("features", {})),
            }
        )
    return pd.DataFrame(out)


def _feedback(ctx: UiContext, labels: list[str]) -> None:
    st.subheader("Feedback")
    with st.form("feedback"):
        request_id = st.text_input("Request id", key="history:feedback_id")
        label = st.selectbox("True class", labels, key="history:feedback_label")
        sent = st.form_submit_button("Send feedback")
    if sent:
        answer = attempt(lambda: ctx.api.feedback(request_id.strip(), label))
        if answer:
            st.success(f"Recorded {answer['label']} for {answer['request_id']}.")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 30, version)


if __name__ == "__main__":
    show("History & Analytics", render)

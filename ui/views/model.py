"""Model management: reload the served model now (admin token), the swap history, and what
the worker serves."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui.client import Json, UiError, worker_models
from ui.context import UiContext
from ui.widgets import admin_token, show, when

RELOAD_KEY = "model:reload_answer"


def render(ctx: UiContext) -> None:
    st.subheader("Reload")
    st.caption(
        "Asks the API to check the registry now and load the version its target points at "
        "(it also does so every poll interval)."
    )
    with st.form("model:reload"):
        token = admin_token("model:token")
        reload = st.form_submit_button("Reload model")
    if reload:
        try:
            st.session_state[RELOAD_KEY] = ctx.api.reload_model(token)
        except UiError as exc:
            st.session_state.pop(RELOAD_KEY, None)
            st.error(exc.message)
    answer: Json | None = st.session_state.get(RELOAD_KEY)
    if answer:
        served = answer.get("model") or {}
        text = f"Reload: {answer['outcome']}" + (
            f" ({answer['detail']})" if answer.get("detail") else ""
        )
        text += f"; serving version {served.get('version')}" if served else "; no model served"
        (st.error if answer["outcome"] in ("failed", "timeout", "degraded") else st.success)(text)

    model = ctx.api.model()
    cols = st.columns(2)
    cols[0].metric("API serves version", model["version"])
    cols[1].metric("worker serves version", _worker_version(ctx))

    st.subheader("Swap history")
    history = ctx.api.model_history()
    swaps = history.get("swaps", [])
    st.caption(
        f"Kept by the API process that answered (pid {history.get('pid')}); each API worker "
        "keeps its own, newest first."
    )
    if not swaps:
        st.info("No swap recorded by this process yet.")
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "at (UTC)": when(s["at"]),
                    "kind": s["kind"],
                    "version": s["version"],
                    "previous": s.get("previous_version"),
                    "load s": s.get("load_seconds"),
                    "reason": s.get("reason"),
                    "run id": s.get("run_id"),
                }
                for s in swaps
            ]
        ),
        hide_index=True,
    )


def _worker_version(ctx: UiContext) -> str:
    url = ctx.settings.resolved_worker_metrics_url()
    if not url:
        return "metrics off"
    try:
        served = worker_models(url, ctx.settings.ui_timeout)
    except UiError:
        return "not reachable"
    return ", ".join(s.get("version", "?") for s in served) or "none loaded"


if __name__ == "__main__":
    show("Model management", render)

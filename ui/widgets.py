"""What every page shares: the guard around its body, the read-at line, the admin token."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from ui.client import UiError
from ui.context import UiContext, get_context

log = logging.getLogger(__name__)

Render = Callable[[UiContext], None]


def show(title: str, render: Render) -> None:
    """One page: its title, when its data was read, a Refresh control, and its body, which
    never shows a traceback: a `UiError` is its message, anything else one logged line."""
    st.title(title)
    left, right = st.columns([5, 1])
    left.caption(f"read at {utc_now()}")
    # A click reruns the script, which reads everything again: no auto-refresh loop.
    right.button("Refresh", key=f"refresh:{title}", width="stretch")
    try:
        render(get_context())
    except UiError as exc:
        st.error(exc.message)
    except Exception as exc:
        log.exception("page %r failed", title)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        st.error(f"This page could not be shown: {type(exc).__name__}: {first}".rstrip(": "))


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def admin_token(key: str) -> str:
    """The admin token, typed for this action: the UI never reads it from its environment."""
    return st.text_input(
        "Admin token",
        type="password",
        key=key,
        help="LIFECYCLE_ADMIN_TOKEN of the API; sent as a Bearer token with this action only.",
    )


def attempt(action: Callable[[], Any]) -> Any:
    """Run an action; its `UiError` becomes an on-page error and None."""
    try:
        return action()
    except UiError as exc:
        st.error(exc.message)
        return None


def gate_table(gates: Sequence[Mapping[str, Any]]) -> None:
    if not gates:
        st.caption("no gates recorded")
        return
    rows = [
        {
            "gate": g.get("name"),
            "passed": bool(g.get("passed")),
            "enforced": bool(g.get("enforced", True)),
            "detail": g.get("detail", ""),
            "numbers": ", ".join(f"{k}={v}" for k, v in (g.get("numbers") or {}).items()),
        }
        for g in gates
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def when(value: str | None) -> str:
    """An ISO time from the API as a short UTC string."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")

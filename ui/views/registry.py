"""Registry: every version with its stage, aliases, scores and last audit; two versions side
by side; gated promotion and rollback through the API (admin token)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from ui.client import Json, UiError
from ui.context import UiContext
from ui.mlflow_reader import VersionView
from ui.widgets import admin_token, gate_table, show

STAGES = ("Production", "Staging")
RESULT_KEY = "registry:result"
AUDIT_FIELDS = (
    "action",
    "stage",
    "promoted_at",
    "promoted_by",
    "reason",
    "previous_version",
    "forced",
)


def render(ctx: UiContext) -> None:
    name = ctx.model_name
    # The table is filled after the actions below run, so a promotion made in this run shows.
    table = st.container()
    versions_before = ctx.mlflow.versions(name)

    st.subheader("Promote or roll back")
    acted = _actions(ctx, name, [v.version for v in versions_before])

    versions = ctx.mlflow.versions(name) if acted else versions_before
    with table:
        _versions(name, versions)
        _compare(ctx, versions)


def _versions(name: str, versions: Sequence[VersionView]) -> None:
    st.subheader(f"Versions of {name}")
    if not versions:
        st.info(f"{name} has no versions.")
        return
    rows = [
        {
            "version": v.version,
            "stage": v.stage,
            "aliases": ", ".join(v.aliases),
            "created (UTC)": v.created.replace("T", " ")[:19],
            **{k: v.metrics.get(k) for k in sorted({m for x in versions for m in x.metrics})},
            "last action": v.audit.get("action"),
            "at": v.audit.get("promoted_at"),
            "by": v.audit.get("promoted_by"),
            "gates": _gate_summary(v.gates),
        }
        for v in reversed(versions)
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    audited = [v for v in reversed(versions) if v.audit]
    for v in audited:
        with st.expander(f"Version {v.version}: its last {v.audit.get('action', 'action')}"):
            st.write({k: v.audit.get(k) for k in AUDIT_FIELDS if k in v.audit})
            gate_table(v.gates)


def _gate_summary(gates: Sequence[Json]) -> str:
    if not gates:
        return ""
    passed = sum(1 for g in gates if g.get("passed"))
    return f"{passed}/{len(gates)} passed"


def _compare(ctx: UiContext, versions: Sequence[VersionView]) -> None:
    st.subheader("Compare two versions")
    if len(versions) < 2:
        st.caption("Comparison needs two versions.")
        return
    by_version = {v.version: v for v in versions}
    numbers = list(reversed(by_version))
    left, right = st.columns(2)
    a = left.selectbox("Version A", numbers, index=min(1, len(numbers) - 1), key="registry:a")
    b = right.selectbox("Version B", numbers, index=0, key="registry:b")
    runs = {}
    for v in (a, b):
        run_id = by_version[v].run_id
        runs[v] = ctx.mlflow.run(run_id) if run_id else None
    metrics = pd.DataFrame(
        {f"v{v}": (run.metrics if run else {}) for v, run in runs.items()}
    ).sort_index()
    if len(metrics.columns) == 2:
        metrics["B - A"] = metrics.iloc[:, 1] - metrics.iloc[:, 0]
    st.markdown("**Metrics**")
    st.dataframe(metrics)
    params = pd.DataFrame(
        {f"v{v}": (run.params if run else {}) for v, run in runs.items()}
    ).sort_index()
    st.markdown("**Parameters**")
    st.dataframe(params)
    for col, v in zip((left, right), (a, b), strict=True):
        run_id = by_version[v].run_id
        image = ctx.mlflow.confusion_matrix(run_id) if run_id else None
        if image:
            col.image(image, caption=f"confusion matrix of v{v}")
        else:
            col.caption(f"v{v}: no confusion matrix logged")


def _actions(ctx: UiContext, name: str, versions: Sequence[str]) -> bool:
    """The action form; True when an action was sent in this run."""
    with st.form("registry:action"):
        cols = st.columns(3)
        newest_first = list(reversed(versions))
        version = cols[0].selectbox("Version", newest_first, key="registry:version")
        stage = cols[1].selectbox("Stage", STAGES, key="registry:stage")
        force = cols[2].checkbox("Force (promote despite failed gates)", key="registry:force")
        reason = st.text_input("Reason (recorded in the audit tags)", key="registry:reason")
        token = admin_token("registry:token")
        buttons = st.columns(3)
        check = buttons[0].form_submit_button("Check gates")
        promote = buttons[1].form_submit_button("Promote")
        rollback = buttons[2].form_submit_button("Roll back")
    try:
        if check and version:
            result = ctx.api.registry_gates(token, name, version, stage)
            st.session_state[RESULT_KEY] = {"kind": "gates", "answer": result}
        elif promote and version:
            result = ctx.api.registry_promote(token, name, version, stage, reason or None, force)
            st.session_state[RESULT_KEY] = {"kind": "promote", "answer": result}
        elif rollback:
            result = ctx.api.registry_rollback(token, name, reason or None)
            st.session_state[RESULT_KEY] = {"kind": "rollback", "answer": result}
    except UiError as exc:
        st.session_state[RESULT_KEY] = {"kind": "refused", "message": exc.message, "body": exc.body}
    outcome: Json | None = st.session_state.get(RESULT_KEY)
    if outcome:
        _outcome(outcome)
    return bool(check or promote or rollback)


def _outcome(outcome: Json) -> None:
    kind = outcome["kind"]
    if kind == "refused":
        st.error(outcome["message"])
        body = outcome.get("body")
        if isinstance(body, dict) and body.get("gates"):
            st.markdown("**Gates**")
            gate_table(body["gates"])
        return
    answer = outcome["answer"]
    if kind == "gates":
        verdict = "would pass" if answer.get("passed") else "would refuse"
        st.info(f"Version {answer['version']} {verdict} the gates for {answer['stage']}.")
        gate_table(answer.get("gates", []))
        return
    what = "Rolled back" if answer.get("action") == "rollback" else "Promoted"
    if not answer.get("changed", True):
        st.info(f"Version {answer['version']} is already in {answer['stage']}: nothing changed.")
    else:
        previous = answer.get("previous_version")
        st.success(
            f"{what} {answer['name']} version {answer['version']} to {answer['stage']}"
            + (f" (was version {previous})" if previous else "")
            + (" — forced past failed gates" if answer.get("forced") else "")
            + "."
        )
    gate_table(answer.get("gates", []))


if __name__ == "__main__":
    show("Registry", render)

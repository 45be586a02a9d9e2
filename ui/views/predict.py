"""Predict: a form from the served version's features, and a CSV file scored as a batch."""

from __future__ import annotations

import io
import time
from pathlib import PurePath
from typing import Any

import pandas as pd
import streamlit as st

from ui.client import Json, UiError
from ui.context import UiContext
from ui.features import FeatureHint, csv_rows, number_or_text, summarise
from ui.mlflow_reader import MlflowReader
from ui.widgets import show

LAST_KEY = "predict:last"
BATCH_KEY = "predict:batch"
# A batch file can take minutes; the page shows progress meanwhile, and stops waiting here.
BATCH_WAIT_SECONDS = 600.0
POLL_SECONDS = 0.3


@st.cache_data(show_spinner="Reading the training rows…", max_entries=16)
def training_hints(
    _reader: MlflowReader,
    uri: str,
    name: str,
    version: str,
    run_id: str,
    features: tuple[tuple[str, str], ...],
) -> dict[str, FeatureHint]:
    """Per served version (a version's training rows never change); the reader is not part
    of the key."""
    frame = _reader.training_rows(run_id)
    return summarise(frame, [{"name": n, "kind": k} for n, k in features])


def render(ctx: UiContext) -> None:
    model = ctx.api.model()
    version = str(model["version"])
    st.caption(
        f"Served: {model['name']} version {version}"
        + (f" ({model['stage']})" if model.get("stage") else "")
    )
    features = [(str(f["name"]), str(f["kind"])) for f in model["features"]]
    hints: dict[str, FeatureHint] = {}
    if model.get("run_id"):
        try:
            hints = training_hints(
                ctx.mlflow, ctx.mlflow.uri, model["name"], version, model["run_id"], tuple(features)
            )
        except UiError as exc:
            st.info(f"No training ranges to show: {exc.message}")

    st.subheader("One prediction")
    with st.form("predict"):
        values: dict[str, Any] = {}
        for name, kind in features:
            values[name] = _field(name, kind, hints.get(name), version)
        submitted = st.form_submit_button("Predict")
    if submitted:
        entered = {
            name: number_or_text(value) if kind == "numeric" else value
            for (name, kind), value in zip(features, values.values(), strict=True)
        }
        try:
            st.session_state[LAST_KEY] = ctx.api.predict(entered)
        except UiError as exc:
            st.session_state.pop(LAST_KEY, None)
            st.error(exc.message)
    answer: Json | None = st.session_state.get(LAST_KEY)
    if answer:
        _answer(answer)

    st.subheader("Score a CSV file")
    st.caption(
        "One row per prediction, a header with the model's feature names; scored as a batch "
        "by the worker."
    )
    upload = st.file_uploader("CSV file", type=["csv"], key="predict:upload")
    if st.button("Score the file", disabled=upload is None) and upload is not None:
        st.session_state.pop(BATCH_KEY, None)
        _score_file(ctx, upload.name, upload.getvalue())
    batch = st.session_state.get(BATCH_KEY)
    if batch:
        _batch_result(batch)


def _field(name: str, kind: str, hint: FeatureHint | None, version: str) -> Any:
    key = f"predict:v{version}:{name}"
    if kind == "numeric":
        hint_text = hint.range_text() if hint else None
        default = f"{hint.median:g}" if hint and hint.median is not None else ""
        return st.text_input(
            name, value=default, key=key, help=hint_text, placeholder=hint_text or "a number"
        )
    if hint and hint.categories:
        return st.selectbox(name, hint.categories, key=key)
    return st.text_input(name, key=key)


def _answer(answer: Json) -> None:
    model = answer.get("model", {})
    cols = st.columns(3)
    cols[0].metric("class", str(answer.get("label")))
    cols[1].metric("prediction", str(answer.get("prediction")))
    cols[2].metric("version", str(model.get("version")))
    st.caption(f"request id {answer.get('request_id')} (for feedback on History & Analytics)")
    probabilities = answer.get("probabilities") or {}
    if probabilities:
        frame = pd.DataFrame(
            {"class": list(probabilities), "probability": list(probabilities.values())}
        ).set_index("class")
        st.bar_chart(frame, y="probability")


def _score_file(ctx: UiContext, filename: str, data: bytes) -> None:
    total = csv_rows(data)
    try:
        accepted = ctx.api.batch_upload(data, "text/csv")
    except UiError as exc:
        st.error(f"{filename}: {exc.message}")
        return
    task_id = accepted["task_id"]
    bar = st.progress(0.0, text=f"task {task_id}: queued")
    deadline = time.monotonic() + BATCH_WAIT_SECONDS
    status: Json = {}
    while time.monotonic() < deadline:
        status = ctx.api.task(task_id)
        if status["status"] in ("success", "failure"):
            break
        rows = (status.get("progress") or {}).get("rows")
        if rows is not None and total:
            bar.progress(min(rows / total, 1.0), text=f"task {task_id}: {rows} of {total} rows")
        else:
            bar.progress(0.0, text=f"task {task_id}: {status['status']}")
        time.sleep(POLL_SECONDS)
    if status.get("status") == "failure":
        bar.empty()
        st.error(f"{filename} was not scored: {status.get('error')}")
        return
    if status.get("status") != "success":
        st.warning(
            f"{filename} is still being scored after {BATCH_WAIT_SECONDS:.0f} s: look up "
            f"task {task_id} later."
        )
        return
    bar.progress(1.0, text=f"task {task_id}: done")
    result = status.get("result") or {}
    output = ctx.api.batch_output(task_id)
    stem = PurePath(filename).stem or "batch"
    st.session_state[BATCH_KEY] = {
        "task_id": task_id,
        "file_name": f"{stem}.scored.csv",
        "data": output,
        "rows": result.get("rows"),
        "version": (result.get("model") or {}).get("version"),
        "seconds": result.get("seconds"),
    }


def _batch_result(batch: dict[str, Any]) -> None:
    st.success(
        f"{batch['rows']} rows scored by version {batch['version']} in {batch['seconds']} s "
        f"(task {batch['task_id']})."
    )
    st.download_button(
        "Download the scored file",
        data=batch["data"],
        file_name=batch["file_name"],
        mime="text/csv",
        key="predict:download",
    )
    try:
        preview = pd.read_csv(io.BytesIO(batch["data"]), nrows=20)
    except (ValueError, UnicodeDecodeError):
        return
    st.dataframe(preview, hide_index=True)


if __name__ == "__main__":
    show("Predict", render)

"""The UI's collaborators, built once per server process from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from lifecycle.core.options import load_settings
from lifecycle.core.settings import Settings
from serving.runtime.probe import fail_fast_http
from ui.client import ApiClient
from ui.mlflow_reader import MlflowReader


@dataclass(frozen=True)
class UiContext:
    settings: Settings
    api: ApiClient
    mlflow: MlflowReader

    @property
    def model_name(self) -> str:
        """The registered model the UI shows (LIFECYCLE_MODEL_NAME, or the dataset's)."""
        return self.settings.registered_model_name()


def build_context(settings: Settings) -> UiContext:
    # MLflow's client retries a refused connection for minutes: a page waiting that long
    # looks dead.
    fail_fast_http(settings.ui_timeout, keep_set=True)
    return UiContext(
        settings=settings,
        api=ApiClient(settings.resolved_api_url(), settings.ui_timeout),
        mlflow=MlflowReader(settings),
    )


@st.cache_resource(show_spinner=False)
def get_context() -> UiContext:
    """The one place the UI reads its settings: every page and session shares the result."""
    return build_context(load_settings())

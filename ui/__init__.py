"""The Streamlit app: Lifecycle's API and MLflow, over HTTP, for people (docs/ui.md)."""

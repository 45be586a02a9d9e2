"""The Streamlit entry script (`streamlit run ui/app.py`, or `lifecycle ui`): the pages.

Each page is a file under ui/views/ that Streamlit runs on its own; they share the settings
and clients through `ui.context.get_context` (built once per process).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

# Not "pages": Streamlit lists a folder of that name by its file names, bypassing
# st.navigation, whenever a fresh server's first request is a deep link such as /history.
PAGES = Path(__file__).parent / "views"


def main() -> None:
    st.set_page_config(page_title="Lifecycle", layout="wide")
    navigation = st.navigation(
        [
            st.Page(PAGES / "overview.py", title="Overview", url_path="overview", default=True),
            st.Page(PAGES / "predict.py", title="Predict", url_path="predict"),
            st.Page(PAGES / "history.py", title="History & Analytics", url_path="history"),
            st.Page(PAGES / "registry.py", title="Registry", url_path="registry"),
            st.Page(PAGES / "drift.py", title="Drift", url_path="drift"),
            st.Page(PAGES / "model.py", title="Model management", url_path="model"),
        ]
    )
    navigation.run()


# Streamlit runs this file as __main__; importing it (a test, a linter) does nothing.
if __name__ == "__main__":
    main()

"""The UI's verb: `lifecycle ui` runs the Streamlit app (ui/app.py) in the foreground."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from lifecycle.core.options import load_settings
from lifecycle.core.settings import Settings

app = typer.Typer()

APP_SCRIPT = Path(__file__).resolve().parent / "app.py"


def streamlit_command(settings: Settings, host: str, port: int) -> list[str]:
    """The `streamlit run` command line `lifecycle ui` and `lifecycle up` start."""
    upload_mb = max(1, settings.max_upload_bytes // (1 << 20))
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_SCRIPT),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        # The app is run, not edited, here: no file watcher thread polling the tree.
        "--server.fileWatcherType",
        "none",
        # Streamlit's own cap is 200 MB; the API's upload limit is the one that matters.
        "--server.maxUploadSize",
        str(upload_mb),
        # Operators use the app; Streamlit's own deploy and developer menu would only confuse.
        "--client.toolbarMode",
        "viewer",
        # No telemetry: the machines Lifecycle runs on need not reach the internet.
        "--browser.gatherUsageStats",
        "false",
    ]


@app.command()
def ui(
    host: Annotated[str | None, typer.Option(help="Bind host (default: ui_host).")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port (default: ui_port).")] = None,
) -> None:
    """Run the Streamlit app: predict, history, registry, drift, model management."""
    settings = load_settings()
    cmd = streamlit_command(settings, host or settings.ui_host, port or settings.ui_port)
    # exec: Ctrl-C and the supervisor's SIGTERM reach Streamlit itself.
    os.execv(cmd[0], cmd)

"""The README's screenshots of the UI: `python -m scripts.screenshots` (`make screenshots`).

Starts `lifecycle up` in a temporary data directory (free ports, so it runs next to another
`up`), sends traffic with feedback through the API (`lifecycle simulate`: plain rows, then rows
with two features shifted), makes one drift report (`lifecycle drift`), and saves the Overview
and History & Analytics pages, as headless Chromium shows them, to docs/images/.
Needs Debian's `chromium` package; no browser is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import ViewportSize

from lifecycle.core.settings import PROJECT_ROOT
from tests.support.browser import chromium, exceptions, screenshot, wait_idle
from tests.support.cli import cli_env, run_cli
from tests.support.up import UpProcess, lifecycle_up

IMAGES = PROJECT_ROOT / "docs" / "images"
MODEL = "iris-classifier"  # the model `up` trains on first start
# Wide enough for the History page's charts side by side, tall enough for their first rows
# (Streamlit scrolls inside its own panel: a full-page shot is the window).
VIEWPORT: ViewportSize = {"width": 1440, "height": 1400}
# URL path -> image; the Overview is the app's default page, at the root.
PAGES = {"": "overview.png", "history": "history.png"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--out", type=Path, default=IMAGES, help="folder for the PNG files")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="lifecycle-screenshots-") as home,
        lifecycle_up(Path(home) / "data", "--no-airflow") as up,
    ):
        _traffic(up)
        _report(up)
        saved = _capture(up, args.out)
    for path in saved:
        print(f"saved {path}")
    return 0


def _env(up: UpProcess) -> dict[str, str]:
    """The CLI's environment for the running `up`: its tracking server and data directory."""
    return cli_env(
        MLFLOW_TRACKING_URI=up.urls["MLflow UI and registry"],
        LIFECYCLE_DATA_DIR=str(up.data_dir),
    )


def _cli(up: UpProcess, *args: str) -> str:
    result = run_cli(*args, env=_env(up))
    if result.returncode != 0:
        raise RuntimeError(f"lifecycle {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout.strip()


def _traffic(up: UpProcess) -> None:
    """Version 1's traffic with feedback, then a second version promoted and its traffic, some
    of it shifted and some through the worker: the pages' per-version charts show both."""
    api = up.urls["scoring API"]
    paced = ["--batch-size", "20", "--rate", "200", "--api", api]
    print(_cli(up, "simulate", "--count", "300", "--feedback-accuracy", "0.93", *paced))
    print(_cli(up, "train", "--estimator", "random_forest", "--register").splitlines()[-1])
    reason = "a second version for the README's screenshots"
    print(_cli(up, "promote", MODEL, "2", "--force", "--reason", reason).splitlines()[-1])
    _wait_served(api, "2")
    print(_cli(up, "simulate", "--count", "300", "--feedback-accuracy", "0.88", *paced))
    shifted = ["--shift", "petal length (cm)=+1.5", "--shift", "sepal width (cm)=*0.7"]
    print(_cli(up, "simulate", "--count", "200", *shifted, *paced))
    async_rows = ["--count", "60", "--batch-size", "10", "--via", "async", "--api", api]
    print(_cli(up, "simulate", *async_rows))


def _wait_served(api: str, version: str, timeout: float = 120) -> None:
    """The API follows the registry on its next poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        served = httpx.get(f"{api}/model", timeout=10).json().get("version")
        if str(served) == version:
            return
        time.sleep(1)
    raise TimeoutError(f"the API did not serve version {version} within {timeout:g}s")


def _report(up: UpProcess) -> None:
    table = _cli(up, "drift", "--last", "500")
    print(*[line for line in table.splitlines() if line.startswith("verdict")])


def _capture(up: UpProcess, out: Path) -> list[Path]:
    ui = up.urls["Lifecycle UI"]
    saved = []
    with chromium() as browser:
        for path, name in PAGES.items():
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            page.goto(f"{ui}/{path}")
            wait_idle(page)
            if name == "overview.png":
                # Its rates are the change between two reads: traffic, then Refresh.
                api = up.urls["scoring API"]
                _cli(up, "simulate", "--count", "150", "--rate", "75", "--api", api)
                page.get_by_role("button", name="Refresh").click()
                wait_idle(page)
            # Vega draws its charts after the script's run, with a short transition.
            page.wait_for_timeout(1500)
            found = exceptions(page)
            if found:
                raise RuntimeError(f"{path}: the page shows an exception:\n{found[0]}")
            saved.append(screenshot(page, out / name))
            page.close()
    return saved


if __name__ == "__main__":
    sys.exit(main())

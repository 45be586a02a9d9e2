"""The Streamlit app in a real browser: Debian's headless Chromium driven by Playwright.

Playwright's own browser download is never used (`playwright install` needs the internet):
Chromium is the system package, launched by path. Shared by tests/e2e/test_ui_browser.py and
scripts/screenshots.py.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# The machines this runs on may have no internet: without these, Chromium's background
# services (updates, sync, QUIC probes) try to connect and log failures, or hang a launch.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APP = '[data-testid="stApp"]'
EXCEPTION = '[data-testid="stException"]'
ERROR = '[data-testid="stAlertContentError"]'


def chromium_path() -> str:
    """The system Chromium, or a clear failure naming the package to install."""
    found = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not found:
        raise FileNotFoundError(
            f"no Chromium at {CHROMIUM} or on PATH: install Debian's `chromium` package"
        )
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Browser, url: str, timeout: float = 60) -> Page:
    """A new tab on `url`, once Streamlit has run the page's script and drawn it."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(timeout * 1000)
    page.goto(url)
    wait_idle(page, timeout)
    return page


def wait_idle(page: Page, timeout: float = 60, settle: int = 3) -> None:
    """Until the app is connected and its script is not running, `settle` checks in a row
    (0.2 s apart): a click's rerun starts a moment after the click, so one idle reading
    right after it may still be the run before."""
    deadline = time.monotonic() + timeout
    idle = 0
    state = connection = None
    while idle < settle:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{page.url}: Streamlit not idle in {timeout:g}s "
                f"(script {state}, connection {connection})"
            )
        app = page.locator(APP)
        if app.count():
            state = app.get_attribute("data-test-script-state")
            connection = app.get_attribute("data-test-connection-state")
        idle = idle + 1 if (state, connection) == ("notRunning", "CONNECTED") else 0
        page.wait_for_timeout(200)


def exceptions(page: Page) -> list[str]:
    """Texts of the exception boxes Streamlit draws for an uncaught error (a traceback)."""
    return page.locator(EXCEPTION).all_inner_texts()


def dialogs(page: Page) -> list[str]:
    """Texts of open dialogs, such as Streamlit's "Page not found" over a wrong URL."""
    return page.get_by_role("dialog").all_inner_texts()


def errors(page: Page) -> list[str]:
    """Texts of the page's error boxes (st.error)."""
    return page.locator(ERROR).all_inner_texts()


def screenshot(page: Page, path: Path) -> Path:
    """The whole page, not just the viewport, as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path

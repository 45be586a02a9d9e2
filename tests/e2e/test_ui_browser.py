"""The UI in a real browser: headless Chromium (Debian's package, driven by Playwright) on the
Streamlit app that `lifecycle up` started (the e2e package's shared `up`, tests/e2e/conftest.py).

Every page renders with no Streamlit exception and no error box; the Predict form answers with
the class and the served version; a CSV upload is scored and offered for download, and an empty
one is refused with a message. A screenshot per page goes to the test's temporary directory
(its path is printed; `pytest -s` shows it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.support.browser import (
    chromium,
    chromium_path,
    dialogs,
    errors,
    exceptions,
    open_page,
    screenshot,
    wait_idle,
)
from tests.support.services import _unavailable
from tests.support.up import UpProcess

# URL path -> title. The default page lives at the root: Streamlit answers its url_path
# (/overview) with a "Page not found" dialog over the main page.
PAGES = {
    "": "Overview",
    "predict": "Predict",
    "history": "History & Analytics",
    "registry": "Registry",
    "drift": "Drift",
    "model": "Model management",
}
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
SETOSA = [5.1, 3.5, 1.4, 0.2]
# Long enough for a batch task through the embedded broker on a busy machine.
BATCH_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        chromium_path()
    except FileNotFoundError as exc:
        _unavailable(str(exc))  # a skip locally, a failure in CI
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def ui(shared_up: UpProcess) -> str:
    return shared_up.urls["Lifecycle UI"]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"UI screenshots: {folder}")
    return folder


@pytest.fixture
def predict(browser: Browser, ui: str) -> Iterator[Page]:
    page = open_page(browser, f"{ui}/predict")
    yield page
    page.close()


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_renders_without_an_exception(
    browser: Browser, ui: str, screenshots: Path, path: str
) -> None:
    page = open_page(browser, f"{ui}/{path}")
    try:
        expect(page.get_by_role("heading", name=PAGES[path], level=1)).to_be_visible()
        # The app's own navigation (st.navigation, titles), even when a page's URL is the
        # first one a fresh server sees: not Streamlit's pages-folder listing of file names.
        assert _navigation(page) == list(PAGES.values())
        assert exceptions(page) == []
        assert errors(page) == []
        assert dialogs(page) == []
        shot = screenshot(page, screenshots / f"{path or 'overview'}.png")
        print(f"{path}: {shot}")
        assert shot.stat().st_size > 10_000
    finally:
        page.close()


def test_the_predict_form_answers_with_the_class_and_the_version(predict: Page) -> None:
    for name, value in zip(FEATURES, SETOSA, strict=True):
        predict.get_by_role("textbox", name=name).fill(str(value))
    predict.get_by_role("button", name="Predict").click()
    expect(_metric(predict, "class")).to_have_text("setosa")
    expect(_metric(predict, "version")).to_have_text("1")
    wait_idle(predict)
    assert exceptions(predict) == []


def test_a_non_numeric_field_shows_the_apis_message(predict: Page) -> None:
    predict.get_by_role("textbox", name=FEATURES[1]).fill("abc")
    predict.get_by_role("button", name="Predict").click()
    error = predict.locator('[data-testid="stAlertContentError"]')
    expect(error).to_contain_text(f"feature '{FEATURES[1]}' must be a number, got 'abc'")
    assert exceptions(predict) == []


def test_a_csv_upload_is_scored_and_offered_for_download(predict: Page) -> None:
    rows = [SETOSA, [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]
    body = ",".join(FEATURES) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    _upload(predict, "three.csv", body.encode())
    predict.get_by_role("button", name="Score the file").click()
    download = predict.get_by_role("button", name="Download the scored file")
    expect(download).to_be_visible(timeout=BATCH_TIMEOUT_MS)
    expect(predict.get_by_text("3 rows scored by version 1")).to_be_visible()
    with predict.expect_download() as caught:
        download.click()
    scored = Path(caught.value.path()).read_text()
    assert scored.splitlines()[0].count(",") >= len(FEATURES)
    assert len(scored.splitlines()) == 1 + len(rows)
    assert exceptions(predict) == []


def test_an_empty_csv_upload_shows_a_clear_message(predict: Page) -> None:
    _upload(predict, "empty.csv", b"")
    predict.get_by_role("button", name="Score the file").click()
    error = predict.locator('[data-testid="stAlertContentError"]')
    expect(error).to_contain_text("empty.csv: upload is empty")
    wait_idle(predict)
    assert exceptions(predict) == []
    assert not predict.get_by_role("button", name="Download the scored file").count()


def _navigation(page: Page) -> list[str]:
    links = page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()
    return [link.strip() for link in links]


def _metric(page: Page, label: str) -> Locator:
    metric = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)
    )
    return metric.locator('[data-testid="stMetricValue"]')


def _upload(page: Page, name: str, data: bytes) -> None:
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        {"name": name, "mimeType": "text/csv", "buffer": data}
    )
    # The file is sent to the server and the script reruns with it: then the button is live.
    expect(page.get_by_role("button", name="Score the file")).to_be_enabled()
    wait_idle(page)

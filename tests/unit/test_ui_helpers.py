"""The UI's pure helpers: the page cursors, the Predict form's hints and cells, the client's
error sentences."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from ui.client import ApiClient, UiError, _detail
from ui.features import csv_rows, number_or_text, summarise
from ui.paging import CursorStack


def test_cursor_stack_pages_forward_and_back_and_resets_on_new_filters() -> None:
    stack = CursorStack()
    stack.reset("24h")
    assert (stack.page, stack.before) == (0, None)
    stack.next("c1")
    stack.next("c2")
    assert (stack.page, stack.before) == (2, "c2")
    stack.next(None)  # the last page has no next
    assert stack.page == 2
    stack.previous()
    assert (stack.page, stack.before) == (1, "c1")
    stack.reset("24h")  # same filters: stay
    assert stack.page == 1
    stack.reset("1h|rest")  # a cursor of one filter means nothing in another
    assert (stack.page, stack.before) == (0, None)
    stack.previous()
    assert stack.page == 0


def test_summarise_gives_ranges_medians_and_categories() -> None:
    frame = pd.DataFrame(
        {"a": [1.0, 2.0, 10.0], "colour": ["red", "blue", "red"], "target": [0, 1, 0]}
    )
    hints = summarise(
        frame,
        [
            {"name": "a", "kind": "numeric"},
            {"name": "colour", "kind": "categorical"},
            {"name": "absent", "kind": "numeric"},
        ],
    )
    assert (hints["a"].low, hints["a"].high, hints["a"].median) == (1.0, 10.0, 2.0)
    assert hints["a"].range_text() == "training range 1 to 10"
    assert hints["colour"].categories == ("blue", "red")
    assert "absent" not in hints


@pytest.mark.parametrize(
    ("text", "sent"),
    [("5.1", 5.1), (" 3 ", 3.0), ("", None), ("abc", "abc"), ("nan", "nan"), ("1e999", "1e999")],
)
def test_a_typed_cell_reaches_the_api_as_a_number_or_as_typed(text: str, sent: object) -> None:
    assert number_or_text(text) == sent


def test_csv_rows_counts_data_rows() -> None:
    assert csv_rows(b"a,b\n1,2\n3,4\n") == 2
    assert csv_rows(b'a,b\n"x\ny",2\n') == 1  # a quoted newline stays in its cell
    assert csv_rows(b"a,b\n") == 0
    assert csv_rows(b"") == 0
    assert csv_rows(b"\xff\xfe") is None


def _response(status: int, json: object = None, text: str | None = None) -> httpx.Response:
    request = httpx.Request("GET", "http://x/y")
    if text is not None:
        return httpx.Response(status, request=request, text=text)
    return httpx.Response(status, request=request, json=json)


def test_the_api_detail_is_shown_as_it_says_it() -> None:
    assert _detail(_response(422, json={"detail": "row 0: feature 'a' must be a number"}))[0] == (
        "row 0: feature 'a' must be a number"
    )
    listed = {"detail": [{"loc": ["query", "limit"], "msg": "Input should be less than 1000"}]}
    assert _detail(_response(422, json=listed))[0] == "limit: Input should be less than 1000"
    assert _detail(_response(502, text="<html>Bad gateway</html>"))[0] == (
        "HTTP 502: <html>Bad gateway</html>"
    )


def test_a_closed_port_is_not_reachable() -> None:
    client = ApiClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(UiError, match=r"The API at http://127.0.0.1:9 is not reachable \(") as err:
        client.model()
    assert err.value.status is None

"""A task's failure is always storable, and the task ledger knows exactly the ids it was given.

The integration regressions (tests/integration/test_no_server_error.py) show the symptoms
end to end; these pin the two mechanisms without a broker.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from kombu.utils.json import dumps as kombu_dumps

from lifecycle.core.store import StoreUnavailable
from serving.async_scoring import MAX_ERROR_CHARS, TaskFailed, plain_json, storable_failures
from serving.inference import _not_finite
from serving.task_ids import TaskLedger
from serving.validation import InvalidInput
from tests.support.services import temp_database


def _storable(exc: BaseException) -> None:
    """What a result backend does with a failure: JSON arguments, UTF-8 text."""
    kombu_dumps({"exc_message": exc.args}).encode("utf-8")
    str(exc).encode("utf-8")
    assert exc.__cause__ is None and exc.__suppress_context__


def test_a_message_with_lone_surrogates_keeps_its_type_and_becomes_valid_text() -> None:
    with pytest.raises(InvalidInput) as caught, storable_failures("t1"):
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise InvalidInput("batch file '/tmp/\udc80\ud800.csv' does not exist") from exc
    assert caught.value.message == "batch file '/tmp/\ufffd\ufffd.csv' does not exist"
    assert caught.value.args == (caught.value.message,)
    _storable(caught.value)


def test_an_unexpected_error_with_arguments_json_cannot_carry_becomes_one_line() -> None:
    with pytest.raises(TaskFailed) as caught, storable_failures("t2"):
        raise RuntimeError(object(), "\ud800", "x" * MAX_ERROR_CHARS)
    message = caught.value.message
    assert message.startswith("internal error: RuntimeError: (<object object at")
    assert len(message) == MAX_ERROR_CHARS and "\ud800" not in message  # repr escapes it
    _storable(caught.value)


def test_transient_errors_leave_unchanged_so_celery_retries_them() -> None:
    with pytest.raises(StoreUnavailable, match="database down"), storable_failures("t3"):
        raise StoreUnavailable("database down")


def test_results_stored_before_the_fix_still_read_as_strict_json() -> None:
    old = {"probabilities": {"a": float("nan"), "b": float("inf")}, "label": "x\ud800"}
    assert json.dumps(plain_json(old), allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert plain_json(old) == {"probabilities": {"a": None, "b": None}, "label": "x\ufffd"}


def test_the_ledger_knows_recorded_ids_once_across_instances(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    api, replica = TaskLedger(url), TaskLedger(url)
    assert not replica.known("abc")
    api.record("abc", "lifecycle.score")
    api.record("abc", "lifecycle.score")  # a client's retry with the same X-Request-Id
    assert replica.known("abc") and not replica.known("abd")
    api.dispose()
    replica.dispose()


def test_non_finite_outputs_are_found_whatever_the_prediction_dtype() -> None:
    """Classes (object or string labels) are always finite; a regressor's NaN is not."""
    nan, inf = float("nan"), float("inf")
    assert _not_finite(np.array([1.0, nan, inf])).tolist() == [False, True, True]
    assert _not_finite(np.array([0, 1.5, inf], dtype=object)).tolist() == [False, False, True]
    assert _not_finite(np.array(["setosa", "virginica"])).tolist() == [False, False]
    assert _not_finite(np.array([])).tolist() == []


@pytest.mark.postgres
def test_a_fresh_ledger_records_from_many_threads_at_once() -> None:
    """The first calls of a new process create the table: threads arriving together must not
    race on PostgreSQL's catalog (a duplicate-type error failed some of them)."""
    with temp_database("lc_ledger") as url:
        ledger = TaskLedger(url)
        barrier = threading.Barrier(8)
        failures: list[BaseException] = []

        def record(i: int) -> None:
            barrier.wait()
            try:
                ledger.record(f"task-{i}", "lifecycle.score")
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=record, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            assert failures == []
            assert all(ledger.known(f"task-{i}") for i in range(8))
        finally:
            ledger.dispose()

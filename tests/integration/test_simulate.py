"""`lifecycle simulate` against the session's shared stack: MLflow on PostgreSQL, `lifecycle
serve` and `lifecycle worker` on a fresh RabbitMQ vhost, iris v1 in Production. Other modules
send traffic to the same model, so each test reads back only the rows of its own run.

Every row sent is in the prediction log under the served version; a shift moves the stored
feature and only it; feedback at a chosen accuracy is measured back at that accuracy; async
rows go through the worker; a bad shift is one line from the real command.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from lifecycle.core.store.read import PredictionReader
from reports.reference import training_rows
from reports.simulate import ApiClient, ApiError, SimulationRequest, SimulationResult, simulate
from tests.support.cli import assert_one_line_error, cli_env, run_cli
from tests.support.stack import FEATURES, Stack

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def stack(shared_stack: Stack) -> Stack:
    return shared_stack


@pytest.fixture(scope="module")
def reader(stack: Stack) -> PredictionReader:
    assert stack.settings.database_url
    return PredictionReader(stack.settings.database_url)


def _request(stack: Stack, **fields: object) -> SimulationRequest:
    base = SimulationRequest(api_url=stack.api.url, count=10, seed=1)
    return replace(base, **fields)  # type: ignore[arg-type]


def _stored(reader: PredictionReader, stack: Stack, result: SimulationResult) -> pd.DataFrame:
    """The run's rows in the log, waiting for REST's queued writes to land."""
    deadline = time.monotonic() + 20
    ids = set(result.request_ids)
    while True:
        window = reader.window(stack.name, last=result.answered + 1000)
        mine = window[window["request_id"].isin(ids)]
        if set(mine["request_id"]) == ids or time.monotonic() > deadline:
            return mine
        time.sleep(0.2)


def _training_means(stack: Stack) -> pd.Series:
    run_id = mlflow.MlflowClient().get_model_version(stack.name, "1").run_id
    assert run_id
    return training_rows(run_id)[FEATURES].mean()


def test_rest_rows_are_all_stored_under_the_served_version(
    stack: Stack, reader: PredictionReader
) -> None:
    result = simulate(stack.settings, _request(stack, count=30))
    assert (result.sent, result.answered, result.feedback_sent) == (30, 30, 0)
    assert (result.model_name, result.version) == (stack.name, "1")
    assert len(set(result.request_ids)) == 30
    stored = _stored(reader, stack, result)
    assert sorted(stored["request_id"]) == sorted(result.request_ids)
    assert set(stored["model_version"]) == {"1"}
    assert set(stored["source"]) == {"rest"}
    # The rows are training rows: each stored vector is one the model was trained on.
    run_id = mlflow.MlflowClient().get_model_version(stack.name, "1").run_id
    assert run_id
    training = {tuple(r) for r in training_rows(run_id)[FEATURES].itertuples(index=False)}
    assert all(tuple(r) in training for r in stored[FEATURES].itertuples(index=False))


def test_shift_moves_one_feature_mean_and_leaves_the_others(
    stack: Stack, reader: PredictionReader
) -> None:
    shifted = "petal length (cm)"
    request = _request(stack, count=400, batch_size=20, seed=2, shifts=(f"{shifted}=+1.5",))
    result = simulate(stack.settings, request)
    assert result.answered == 400
    stored = _stored(reader, stack, result)
    assert sorted(stored["request_id"]) == sorted(result.request_ids)
    means = _training_means(stack)
    run_id = mlflow.MlflowClient().get_model_version(stack.name, "1").run_id
    assert run_id
    spread = training_rows(run_id)[FEATURES].std()
    for feature in FEATURES:
        # Four standard errors of a mean of 400 draws: a 1.5 shift is far outside it.
        tolerance = 4 * spread[feature] / 400**0.5
        expected = means[feature] + (1.5 if feature == shifted else 0.0)
        assert stored[feature].mean() == pytest.approx(expected, abs=tolerance), feature


def test_feedback_at_a_chosen_accuracy_is_measured_back(
    stack: Stack, reader: PredictionReader
) -> None:
    # The model is right on nearly every training row: 0.7 is the feedback's, not the model's.
    request = _request(stack, count=400, batch_size=25, seed=3, feedback_accuracy=0.7)
    # Feedback on predictions made from here on: this run's, not another module's.
    since = datetime.now(UTC)
    result = simulate(stack.settings, request)
    assert result.feedback_sent == result.answered == 400
    deadline = time.monotonic() + 10
    quality = reader.quality(stack.name, since=since)
    while quality["n"].sum() < 400 and time.monotonic() < deadline:
        time.sleep(0.2)
        quality = reader.quality(stack.name, since=since)
    (row,) = quality.itertuples(index=False)
    assert (row.model_version, row.n) == ("1", 400)
    assert row.accuracy == pytest.approx(0.7, abs=0.07)
    assert row.correct == result.feedback_correct


def test_async_rows_go_through_the_worker_and_are_stored(
    stack: Stack, reader: PredictionReader
) -> None:
    result = simulate(stack.settings, _request(stack, count=22, batch_size=4, via="async"))
    assert (result.sent, result.answered) == (22, 22)
    # Six tasks: five of four rows (ids <task>-<i>), and the last of two.
    assert len({rid.rsplit("-", 1)[0] for rid in result.request_ids}) == 6
    stored = _stored(reader, stack, result)
    assert sorted(stored["request_id"]) == sorted(result.request_ids)
    assert set(stored["source"]) == {"async"}
    assert set(stored["model_version"]) == {"1"}


def test_rate_paces_the_rows(stack: Stack) -> None:
    result = simulate(stack.settings, _request(stack, count=11, rate=20.0))
    assert result.answered == 11
    assert 0.45 <= result.elapsed < 3  # ten intervals of 1/20 s after the first row


def test_an_api_error_is_its_status_and_detail(stack: Stack) -> None:
    with ApiClient(stack.api.url, 10) as api, pytest.raises(ApiError) as caught:
        api.call("GET", "/tasks/never-sent")
    assert caught.value.message == (
        "API answered GET /tasks/never-sent with 404: no task with id 'never-sent' was ever sent"
    )


def _cli_env(stack: Stack) -> dict[str, str]:
    return cli_env(stack.settings, LIFECYCLE_MODEL_NAME=stack.name)


def test_command_prints_one_summary_line(stack: Stack) -> None:
    result = run_cli(
        "simulate", "--count", "5", "--batch-size", "2", "--api", stack.api.url,
        env=_cli_env(stack),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"sent 5 rows, answered 5, feedback 0, {stack.name} version 1, ")
    assert line.endswith(" rows/s")


@pytest.mark.parametrize(
    ("shift", "fragment"),
    [
        ("colour=+1", "the model has no feature 'colour' (features: sepal length (cm), "),
        ("petal length (cm)=+1.5x", "expected FEATURE=+X, FEATURE=-X or FEATURE=*X"),
    ],
)
def test_bad_shift_is_one_line_and_exit_2(stack: Stack, shift: str, fragment: str) -> None:
    result = run_cli("simulate", "--shift", shift, "--api", stack.api.url, env=_cli_env(stack))
    assert_one_line_error(result, f"--shift '{shift}'", fragment)
    assert result.returncode == 2


def test_out_writes_the_drawn_rows_to_a_file_and_sends_none(
    stack: Stack, reader: PredictionReader, tmp_path: Path
) -> None:
    before = reader.count(stack.name)
    out = tmp_path / "inbox" / "rows.parquet"
    result = run_cli(
        "simulate",
        "-n",
        "50",
        "--shift",
        "petal length (cm)=+10",
        "--out",
        str(out),
        "--api",
        stack.api.url,
        env=_cli_env(stack),
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote 50 rows to {out}" in result.stdout
    rows = pd.read_parquet(out)
    assert list(rows.columns) == FEATURES and len(rows) == 50
    assert rows["petal length (cm)"].min() >= 10  # shifted: every training row is >= 1
    assert not list(out.parent.glob("*.partial"))
    assert reader.count(stack.name) == before  # nothing was sent

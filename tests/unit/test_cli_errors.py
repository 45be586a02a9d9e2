"""Bad input to the training commands: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import assert_one_line_error, cli_env, run_cli
from tests.support.services import free_port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # Nothing listens here: any attempt to reach the tracking server must fail fast.
    return cli_env(
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}",
        LIFECYCLE_DATA_DIR=str(tmp_path / "data"),
        LIFECYCLE_TRACKING_TIMEOUT="2",
    )


def test_unknown_dataset(env: dict[str, str]) -> None:
    assert_one_line_error(run_cli("train", "--dataset", "nope", env=env), "unknown dataset 'nope'")


def test_missing_target_column(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,4\n5,6\n")
    result = run_cli("train", "--dataset", str(path), "--target", "label", env=env)
    assert_one_line_error(result, "target column 'label' not in")


def test_empty_file(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    result = run_cli("train", "--dataset", str(path), "--target", "label", env=env)
    assert_one_line_error(result, "file is empty")


def test_single_class_target(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("a,label\n" + "".join(f"{i},yes\n" for i in range(20)))
    result = run_cli("train", "--dataset", str(path), "--target", "label", env=env)
    assert_one_line_error(result, "target 'label' has 1 class")


def test_unreachable_tracking_server(env: dict[str, str]) -> None:
    result = run_cli("train", "--dataset", "iris", env=env, timeout=60)
    assert_one_line_error(result, "MLflow tracking server unreachable at http://127.0.0.1:")


def test_unreachable_tracking_server_for_tune_and_evaluate(env: dict[str, str]) -> None:
    assert_one_line_error(run_cli("tune", "--trials", "2", env=env), "unreachable")
    assert_one_line_error(
        run_cli("evaluate", "--model", "m", "--version", "1", env=env), "unreachable"
    )


def test_bad_estimator_parameter(env: dict[str, str]) -> None:
    result = run_cli("train", "--param", "C", env=env)
    assert_one_line_error(result, "params: expected KEY=VALUE, got 'C'")


def test_mlproject_boolean_parameter_is_checked(env: dict[str, str]) -> None:
    result = run_cli("train", "--register-value", "maybe", env=env)
    assert_one_line_error(result, "register: expected true or false, got 'maybe'")

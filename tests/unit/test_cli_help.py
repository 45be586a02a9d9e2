"""`--help` reads like a usual CLI's: value names such as TEXT and NAME, never Python types."""

from __future__ import annotations

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from lifecycle.cli.main import app
from tests.support.cli import cli_env, run_cli

# `<bool>`, `<list[str]>`, `{name}`: Typer's raw labels.
RAW_LABEL = re.compile(r"<[\w\[\], |]+>|\{\w+\}")
# The root group loads the layers' verbs on first use: list them as `--help` does.
COMMANDS = get_command(app).list_commands(None)  # type: ignore[attr-defined]


def _help(*args: str) -> str:
    # Wide enough that no label is wrapped across lines.
    result = CliRunner().invoke(
        app, [*args, "--help"], prog_name="lifecycle", env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_has_no_raw_type_labels(command: str) -> None:
    text = _help(*([command] if command else []))
    assert RAW_LABEL.findall(text) == [], text


def test_help_names_values_like_a_usual_cli() -> None:
    assert "Usage: lifecycle promote [OPTIONS] NAME VERSION" in _help("promote")
    train = _help("train")
    assert re.search(r"--dataset\s+-d\s+TEXT", train), train
    assert re.search(r"--register\s+--no-register\s+Register", train), train
    assert "INTEGER RANGE" in _help("serve")


def test_plain_help_without_rich_too() -> None:
    result = run_cli("promote", "--help", env=cli_env(TYPER_USE_RICH="0"))
    assert result.returncode == 0, result.stderr
    assert RAW_LABEL.findall(result.stdout) == [], result.stdout
    assert "-s, --stage TEXT" in result.stdout

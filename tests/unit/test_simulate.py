"""`lifecycle simulate`'s pieces that need no API: shifts, the draw, feedback labels, pacing,
and the command's one-line errors before (or instead of) reaching an API."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lifecycle.core.errors import ConfigError
from lifecycle.core.schema import Feature, FeatureSchema
from reports.simulate import (
    Pacer,
    Served,
    Shift,
    SimulationRequest,
    SimulationResult,
    draw,
    draw_rows,
    feedback_label,
    parse_shift,
    resolve_shifts,
)
from tests.support.cli import assert_one_line_error, cli_env, run_cli
from tests.support.services import free_port

SCHEMA = FeatureSchema(
    (Feature("petal length (cm)", "numeric"), Feature("colour", "categorical")),
    "species",
    (0, 1, 2),
    ("setosa", "versicolor", "virginica"),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("petal length (cm)=+1.5", ("petal length (cm)", "+", 1.5)),
        ("petal length (cm)=-0.5", ("petal length (cm)", "+", -0.5)),
        ("petal length (cm) = * 2", ("petal length (cm)", "*", 2.0)),
        ("a=b=+1", ("a=b", "+", 1.0)),
    ],
)
def test_parse_shift(text: str, expected: tuple[str, str, float]) -> None:
    assert parse_shift(text) == expected


@pytest.mark.parametrize(
    "text", ["petal length (cm)", "petal length (cm)=1.5", "x=+abc", "=+1", "x=*nan", "x=+inf"]
)
def test_bad_shift_expression(text: str) -> None:
    with pytest.raises(ConfigError, match="expected FEATURE=\\+X, FEATURE=-X or FEATURE=\\*X"):
        parse_shift(text)


def test_shift_must_name_a_numeric_feature_of_the_model() -> None:
    assert resolve_shifts(["petal length (cm)=*2"], SCHEMA) == [
        Shift("petal length (cm)", "*", 2.0)
    ]
    with pytest.raises(ConfigError, match=r"no feature 'petal'.*features: petal length"):
        resolve_shifts(["petal=+1"], SCHEMA)
    with pytest.raises(ConfigError, match="'colour' is categorical"):
        resolve_shifts(["colour=+1"], SCHEMA)


def test_draw_is_seeded_shifted_and_in_schema_order() -> None:
    rows = pd.DataFrame({"colour": ["red", "blue", None], "petal length (cm)": [1.0, 2.0, 3.0]})
    served = Served("m", "1", "r", SCHEMA, SCHEMA.coerce(rows))
    shifts = [Shift("petal length (cm)", "+", 10.0), Shift("petal length (cm)", "*", 2.0)]
    first = draw_rows(served, 50, shifts, np.random.default_rng(7))
    again = draw_rows(served, 50, shifts, np.random.default_rng(7))
    assert first == again
    assert {tuple(r) for r in first} == {(22.0, "red"), (24.0, "blue"), (26.0, None)}
    assert all(type(r[0]) is float for r in first)  # plain JSON values, not numpy scalars


def test_feedback_label_states_the_accuracy() -> None:
    rng = np.random.default_rng(0)
    labels = SCHEMA.class_labels
    given = [feedback_label("setosa", labels, 0.7, rng) for _ in range(4000)]
    assert given.count("setosa") / len(given) == pytest.approx(0.7, abs=0.03)
    wrong = [g for g in given if g != "setosa"]
    # The wrong ones are spread over the other classes, not always the same one.
    assert wrong.count("versicolor") / len(wrong) == pytest.approx(0.5, abs=0.06)
    assert feedback_label("setosa", ("setosa",), 0.0, rng) == "setosa"


def test_pacer_sleeps_to_the_rate() -> None:
    pacer = Pacer(50.0)
    started = time.monotonic()
    for sent in range(11):
        pacer.wait(sent)
    assert 0.19 <= time.monotonic() - started < 0.5  # 10 rows after the first at 50 rows/s
    started = time.monotonic()
    unpaced = Pacer(0)
    for sent in range(1000):
        unpaced.wait(sent)
    assert time.monotonic() - started < 0.1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count": 0}, "--count"),
        ({"batch_size": 0}, "--batch-size"),
        ({"rate": -1.0}, "--rate"),
        ({"feedback_accuracy": 1.5}, "--feedback-accuracy"),
        ({"via": "grpc"}, "--via"),
        ({"out": Path("rows.json")}, "--out"),
        ({"out": Path("rows.csv"), "feedback_accuracy": 0.9}, "--out"),
        ({"out": Path("rows.csv"), "feedback_truth": True}, "--out"),
        ({"feedback_truth": True, "feedback_accuracy": 0.9}, "--feedback-truth"),
    ],
)
def test_request_check(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"api_url": "http://x", "count": 1, "seed": 0, **change}
    with pytest.raises(ConfigError, match=message):
        SimulationRequest(**fields).check()  # type: ignore[arg-type]


def test_summary_line() -> None:
    result = SimulationResult("iris", "3", "t", sent=10, answered=10, feedback_sent=4, elapsed=2)
    result.versions.update({"3": 6, "4": 4})
    assert result.summary() == (
        "sent 10 rows, answered 10, feedback 4, iris version 3, 2.0s, 5.0 rows/s "
        "(answered by v3: 6, v4: 4)"
    )


def test_api_down_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = cli_env(LIFECYCLE_DATA_DIR=str(tmp_path / "data"))
    result = run_cli("simulate", "--count", "3", "--api", url, env=env, timeout=60)
    assert_one_line_error(result, f"API unreachable at {url}")
    assert result.returncode == 2


def test_bad_shift_expression_is_refused_before_any_call(tmp_path: Path) -> None:
    # Nothing listens at --api: the shift is refused first, so the API is never asked.
    env = cli_env(LIFECYCLE_DATA_DIR=str(tmp_path / "data"))
    api = f"http://127.0.0.1:{free_port()}"
    result = run_cli("simulate", "--shift", "petal length (cm)=+x", "--api", api, env=env)
    assert_one_line_error(result, "--shift 'petal length (cm)=+x'", "FEATURE=+X")
    assert result.returncode == 2


def test_summary_of_written_rows() -> None:
    result = SimulationResult("iris", "3", "t", sent=10, written=Path("/in/rows.csv"))
    assert result.summary() == "wrote 10 rows to /in/rows.csv (iris version 3's training rows)"


def test_draw_gives_each_row_its_own_training_label() -> None:
    rows = pd.DataFrame({"x": [float(i) for i in range(10)]})
    schema = FeatureSchema((Feature("x", "numeric"),), "y", (), ())
    served = Served("m", "1", "r", schema, rows, tuple(f"c{i}" for i in range(10)))
    shifts = resolve_shifts(["x=+100"], schema)
    drawn, labels = draw(served, 50, shifts, np.random.default_rng(3))
    assert len(drawn) == len(labels) == 50
    assert all(label == f"c{int(row[0]) - 100}" for row, label in zip(drawn, labels, strict=True))
    # The same draw as draw_rows: feedback does not change the rows sent.
    assert drawn == draw_rows(served, 50, shifts, np.random.default_rng(3))

"""Drift decisions on real Evidently runs: rows drawn from the reference do not drift,
shifted features do, exactly those; column kinds come from the feature schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from lifecycle.core.config import DriftConfig
from lifecycle.core.errors import ConfigError
from lifecycle.core.schema import Feature, FeatureSchema
from reports.drift import compare
from reports.window import parse_since

IRIS = load_iris(as_frame=True).frame.drop(columns="target")
SCHEMA = FeatureSchema(
    tuple(Feature(str(c), "numeric") for c in IRIS.columns), "target", (0, 1, 2), ("a", "b", "c")
)


def _current(n: int, shifts: dict[str, float], seed: int = 1) -> pd.DataFrame:
    rows = IRIS.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    for name, delta in shifts.items():
        rows[name] += delta
    return rows


def test_rows_from_the_reference_do_not_drift() -> None:
    outcome = compare(SCHEMA, IRIS, _current(500, {}), DriftConfig(), summary=False)

    assert outcome.verdict == "no_drift"
    assert outcome.drifted_features == []
    assert outcome.drift_share == 0
    assert [f.feature for f in outcome.features] == SCHEMA.names
    # 150 reference rows: Evidently's K-S test, a p-value compared with 0.05.
    assert {(f.test, f.threshold) for f in outcome.features} == {("K-S p_value", 0.05)}
    assert all(f.score > 0.05 for f in outcome.features)


def test_exactly_the_shifted_features_drift() -> None:
    shifted = {"petal length (cm)": 1.5, "sepal width (cm)": 1.5}
    outcome = compare(SCHEMA, IRIS, _current(500, shifted), DriftConfig())

    assert sorted(outcome.drifted_features) == sorted(shifted)
    assert outcome.drift_share == 0.5
    assert outcome.verdict == "drift"  # 2 of 4 reaches drift_share 0.5
    assert "<html" in outcome.html.lower()
    assert outcome.snapshot["metrics"]
    quieter = compare(SCHEMA, IRIS, _current(500, shifted), DriftConfig(drift_share=0.75))
    assert quieter.verdict == "no_drift" and quieter.drift_share == 0.5


def test_categorical_features_use_a_categorical_test() -> None:
    schema = FeatureSchema(
        (Feature("x", "numeric"), Feature("colour", "categorical")), "t", (0, 1), ("a", "b")
    )
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {"x": rng.normal(size=300), "colour": rng.choice(["red", "blue"], 300).astype(object)}
    )
    current = pd.DataFrame(
        {"x": rng.normal(size=300), "colour": np.array(["red"] * 290 + ["blue"] * 10, dtype=object)}
    )
    outcome = compare(schema, reference, current, DriftConfig(), summary=False)

    by_name = {f.feature: f for f in outcome.features}
    assert by_name["colour"].kind == "categorical"
    # Two categories and a small reference: a z-test of proportions, not a numeric test.
    assert by_name["colour"].test == "Z-test p_value"
    assert by_name["colour"].drifted and not by_name["x"].drifted


def test_a_configured_test_replaces_evidently_choice() -> None:
    config = DriftConfig(num_method="wasserstein", num_threshold=0.1)
    outcome = compare(SCHEMA, IRIS, _current(500, {"petal width (cm)": 2.0}), config, summary=False)

    assert {f.test for f in outcome.features} == {"wasserstein"}
    assert outcome.drifted_features == ["petal width (cm)"]


def test_since_reads_durations_and_times() -> None:
    now = pd.Timestamp("2026-01-02T00:00:00Z").to_pydatetime()
    assert parse_since("2h", now) == now - pd.Timedelta(hours=2)
    assert parse_since("90s", now) == now - pd.Timedelta(seconds=90)
    assert parse_since("2026-01-01T12:00:00").isoformat() == "2026-01-01T12:00:00+00:00"
    with pytest.raises(ConfigError, match="since: 'soon' is neither a duration"):
        parse_since("soon")
    with pytest.raises(ConfigError, match="reaches before year 1"):
        parse_since("999999999w")

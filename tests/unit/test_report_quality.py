"""Live quality on small and two-label windows: the figures are scikit-learn's macro
averages, and Evidently's page renders where it once raised KeyError (a two-label window)."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn import metrics

from reports.quality import assess

ROWS = {
    "one wrong row": [("setosa", "virginica")],
    "two labels": [("setosa", "virginica"), ("setosa", "setosa"), ("virginica", "virginica")],
    "three labels": [("setosa", "virginica"), ("versicolor", "versicolor"), ("setosa", "setosa")],
}


@pytest.mark.parametrize("case", list(ROWS))
def test_figures_are_macro_averages_over_every_label_seen(case: str) -> None:
    predicted, actual = zip(*ROWS[case], strict=True)
    labelled = pd.DataFrame({"model_version": "3", "label": predicted, "actual": actual})
    outcome = assess(labelled, {"3": {"accuracy": 0.97, "f1_macro": 0.96}})
    got = outcome.per_version["3"]
    labels = sorted(set(predicted) | set(actual))
    macro = {"labels": labels, "average": "macro", "zero_division": 0}
    assert got["n"] == len(predicted)
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(actual, predicted))
    assert got["precision"] == pytest.approx(metrics.precision_score(actual, predicted, **macro))
    assert got["recall"] == pytest.approx(metrics.recall_score(actual, predicted, **macro))
    assert got["f1"] == pytest.approx(metrics.f1_score(actual, predicted, **macro))
    assert got["heldout"] == {"accuracy": 0.97, "f1": 0.96}
    assert "<html" in outcome.html.lower()

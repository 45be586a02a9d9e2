"""Live quality from feedback, per version, beside the held-out scores of its training run.

The figures are scikit-learn's (macro averages over every label seen, predicted or fed
back), the same numbers as the `lifecycle_feedback_*` gauges and `/predictions/stats`;
Evidently's ClassificationPreset draws the page. Evidently reads any two-label window as a
binary task whose positive class is the integer 1, which a window of string labels does not
hold: such a window names its positive class explicitly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from reports.drift import evidently_quiet

# Our name -> the name training records the held-out figure under (macro averages).
_FIGURES = {
    "accuracy": "accuracy",
    "precision": "precision_macro",
    "recall": "recall_macro",
    "f1": "f1_macro",
}


@dataclass(frozen=True)
class QualityOutcome:
    per_version: dict[str, dict[str, Any]]  # version -> n, figures, confusion, heldout
    html: str
    snapshot: dict[str, Any]


def assess(labelled: pd.DataFrame, heldout: dict[str, dict[str, float]]) -> QualityOutcome:
    """`labelled`: model_version, label (predicted) and actual (feedback), one row per
    prediction with feedback. `heldout`: version -> the scores its training run recorded."""
    per_version: dict[str, dict[str, Any]] = {}
    snapshots: dict[str, Any] = {}
    pages = []
    for version, rows in labelled.groupby("model_version", sort=True):
        figures, html, document = _classification(rows)
        key = str(version)
        per_version[key] = {
            "n": len(rows),
            **figures,
            "confusion": _confusion(rows),
            "heldout": {
                name: heldout.get(key, {}).get(recorded)
                for name, recorded in _FIGURES.items()
                if recorded in heldout.get(key, {})
            },
        }
        snapshots[key] = document
        pages.append((key, html))
    return QualityOutcome(per_version, _joined(pages), {"versions": snapshots})


def _classification(rows: pd.DataFrame) -> tuple[dict[str, float], str, dict[str, Any]]:
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        MulticlassClassification,
        Report,
    )
    from evidently.presets import ClassificationPreset

    frame = pd.DataFrame(
        {"label": rows["label"].astype(str).to_numpy(), "actual": rows["actual"].astype(str)}
    )
    labels = sorted(set(frame["label"]) | set(frame["actual"]))
    task: BinaryClassification | MulticlassClassification
    if len(labels) == 2:
        task = BinaryClassification(target="actual", prediction_labels="label", pos_label=labels[1])
    else:
        task = MulticlassClassification(target="actual", prediction_labels="label")
    definition = DataDefinition(categorical_columns=["label", "actual"], classification=[task])
    with evidently_quiet():
        snapshot = Report([ClassificationPreset()]).run(
            Dataset.from_pandas(frame, data_definition=definition), None
        )
        html = snapshot.get_html_str(as_iframe=False)
        document = json.loads(snapshot.json())
    return _figures(frame["actual"], frame["label"], labels), html, document


def _figures(actual: pd.Series, predicted: pd.Series, labels: list[str]) -> dict[str, float]:
    from sklearn import metrics

    macro: dict[str, Any] = {"labels": labels, "average": "macro", "zero_division": 0}
    return {
        "accuracy": float(metrics.accuracy_score(actual, predicted)),
        "precision": float(metrics.precision_score(actual, predicted, **macro)),
        "recall": float(metrics.recall_score(actual, predicted, **macro)),
        "f1": float(metrics.f1_score(actual, predicted, **macro)),
    }


def _confusion(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    """actual label -> predicted label -> count."""
    table = pd.crosstab(rows["actual"].astype(str), rows["label"].astype(str))
    return {
        str(actual): {str(pred): int(n) for pred, n in counts.items() if n}
        for actual, counts in table.iterrows()
    }


def _joined(pages: list[tuple[str, str]]) -> str:
    """One HTML file: Evidently's page per version (each is a whole document), as iframes."""
    if len(pages) == 1:
        return pages[0][1]
    import html as html_lib

    frames = "".join(
        f'<h2>Version {html_lib.escape(v)}</h2><iframe srcdoc="{html_lib.escape(page)}" '
        'style="width:100%;height:1200px;border:0"></iframe>'
        for v, page in pages
    )
    return f"<!doctype html><html><body>{frames}</body></html>"

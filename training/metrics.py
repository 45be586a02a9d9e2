"""Classification metrics and the confusion-matrix figure, shared by train, tune and evaluate."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from sklearn import metrics as skm

from lifecycle.core.schema import FeatureSchema


def score(model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    y_pred = model.predict(X)
    out = {
        "accuracy": skm.accuracy_score(y, y_pred),
        "precision_macro": skm.precision_score(y, y_pred, average="macro", zero_division=0),
        "recall_macro": skm.recall_score(y, y_pred, average="macro", zero_division=0),
        "f1_macro": skm.f1_score(y, y_pred, average="macro", zero_division=0),
    }
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        classes = list(model.classes_)
        out["log_loss"] = skm.log_loss(y, proba, labels=classes)
        # ROC AUC needs every class present in y; it is left out where it is undefined.
        if set(pd.unique(y)) == set(classes):
            if len(classes) == 2:
                out["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
            else:
                out["roc_auc"] = skm.roc_auc_score(
                    y, proba, multi_class="ovr", average="macro", labels=classes
                )
    return {k: float(v) for k, v in out.items()}


def metrics_line(scores: dict[str, float]) -> str:
    """Scores on one line, as the CLI prints them."""
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(scores.items()))


def confusion_figure(model: Any, X: pd.DataFrame, y: pd.Series, schema: FeatureSchema) -> Figure:
    classes = list(schema.classes)
    matrix = skm.confusion_matrix(y, model.predict(X), labels=classes)
    fig, ax = plt.subplots(figsize=(5, 4))
    skm.ConfusionMatrixDisplay(matrix, display_labels=list(schema.class_labels)).plot(
        ax=ax, colorbar=False
    )
    ax.set_title("Confusion matrix (held-out split)")
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)

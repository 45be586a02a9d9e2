"""Data drift of a window against a version's training rows, by Evidently's DataDriftPreset.

The column kinds come from the feature schema the model carries; the stat test of each
feature is Evidently's choice unless conf/drift.yaml names one. A feature drifts when
Evidently's own per-column test fails, and the window drifts when the share of drifted
features reaches `drift_share` (Evidently's dataset-level test).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lifecycle.core.config import DriftConfig
from lifecycle.core.schema import FeatureSchema
from lifecycle.core.store.report_index import FeatureDrift


@dataclass(frozen=True)
class DriftOutcome:
    features: list[FeatureDrift]
    drift_share: float
    verdict: str  # "drift" | "no_drift"
    html: str
    snapshot: dict[str, Any]  # Evidently's JSON snapshot

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]


def compare(
    schema: FeatureSchema,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: DriftConfig,
    summary: bool = True,
) -> DriftOutcome:
    """Both frames hold the schema's features typed as `FeatureSchema.coerce` types them."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    definition = DataDefinition(
        numerical_columns=schema.numeric, categorical_columns=schema.categorical
    )
    preset = DataDriftPreset(
        columns=schema.names,
        drift_share=config.drift_share,
        num_method=config.num_method,
        cat_method=config.cat_method,
        num_threshold=config.num_threshold,
        cat_threshold=config.cat_threshold,
        per_column_method=dict(config.per_feature_method) or None,
        per_column_threshold=dict(config.per_feature_threshold) or None,
    )
    metrics: list[Any] = [preset, DataSummaryPreset(columns=schema.names)] if summary else [preset]
    with evidently_quiet():
        snapshot = Report(metrics, include_tests=True).run(
            Dataset.from_pandas(current[schema.names], data_definition=definition),
            Dataset.from_pandas(reference[schema.names], data_definition=definition),
        )
        html = snapshot.get_html_str(as_iframe=False)
        document = json.loads(snapshot.json())
    kinds = {f.name: f.kind for f in schema.features}
    features = _per_feature(document, kinds)
    drifted = sum(f.drifted for f in features)
    share = drifted / len(features) if features else 0.0
    verdict = "drift" if features and share >= config.drift_share else "no_drift"
    return DriftOutcome(features, share, verdict, html, document)


def _per_feature(document: dict[str, Any], kinds: Mapping[str, str]) -> list[FeatureDrift]:
    """Each ValueDrift metric (column, method, threshold, score) with its test's status."""
    status = {
        test["metric_config"]["metric_id"]: test["status"]
        for test in document.get("tests", [])
        if test.get("id") == "drift"
    }
    found: dict[str, FeatureDrift] = {}
    for metric in document.get("metrics", []):
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        column = str(config["column"])
        if column not in kinds:
            continue
        found[column] = FeatureDrift(
            feature=column,
            kind=kinds[column],
            test=str(config.get("method")),
            score=float(metric["value"]),
            threshold=float(config.get("threshold")),
            drifted=status.get(metric["id"]) == "FAIL",
        )
    missing = [name for name in kinds if name not in found]
    if missing:
        raise RuntimeError(f"Evidently reported no drift test for {missing}")
    return [found[name] for name in kinds]


@contextmanager
def evidently_quiet() -> Iterator[None]:
    """Evidently warns per column about choices made here on purpose (explicit column kinds,
    a small reference); one report would print dozens of lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield

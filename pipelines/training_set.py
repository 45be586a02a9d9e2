"""The retrain DAG's training set: the served version's own training rows plus the production
rows that received feedback since it was registered, the feedback label as the target."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from lifecycle.core import mlflow_gateway
from lifecycle.core.errors import NotFound
from lifecycle.core.schema import FeatureSchema
from lifecycle.core.settings import Settings
from lifecycle.core.store.frames import FEATURE_PREFIX, LABELLED_COLUMNS
from lifecycle.core.store.read import PredictionReader
from reports.reference import training_rows

TRAIN_FILE = "train.csv"


def safe_name(text: str) -> str:
    """A DAG run id (`manual__2026-01-01T00:00:00+00:00`) as one path segment."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".")
    return cleaned or "run"


def build_training_set(
    settings: Settings, report_id: str | None, dag_run_id: str
) -> dict[str, Any]:
    name = settings.registered_model_name()
    client = mlflow_gateway.connect(settings)
    stage = settings.model_stage
    in_stage = mlflow_gateway.versions_in_stage(client, name, stage)
    if not in_stage:
        raise NotFound(f"{name} has no {stage} version to retrain from")
    base_version = max(in_stage, key=lambda v: int(v.version))
    if not base_version.run_id:
        raise NotFound(f"{name} v{base_version.version} has no training run, so no training rows")
    schema = FeatureSchema.from_metadata(
        mlflow_gateway.model_metadata(f"models:/{name}/{base_version.version}")
    )
    base = training_rows(base_version.run_id)[[*schema.names, schema.target]]
    since = datetime.fromtimestamp(base_version.creation_timestamp / 1000, UTC)
    reader = PredictionReader.from_settings(settings)
    try:
        labelled = reader.labelled(name, since=since)
    finally:
        reader.dispose()
    extra, dropped = labelled_rows(labelled, schema)
    print(
        f"{name} v{base_version.version}: {len(base)} training rows; {len(extra)} production "
        f"rows with feedback since {since.isoformat(timespec='seconds')}"
        + (
            f" ({dropped} left out: feedback label not one of the model's classes)"
            if dropped
            else ""
        )
    )
    if extra.empty:
        print("no labelled production rows: the candidate trains on the base rows only")
    frame = pd.concat([base, extra], ignore_index=True) if len(extra) else base
    folder = settings.resolved_pipeline_dir() / "retrain" / safe_name(dag_run_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TRAIN_FILE
    _write_csv(frame, path)
    print(f"training set: {len(frame)} rows, target '{schema.target}' -> {path}")
    return {
        "path": str(path),
        "target": schema.target,
        "rows": len(frame),
        "base_rows": len(base),
        "labelled_rows": len(extra),
        "model_name": name,
        "base_version": str(base_version.version),
        "class_labels": {
            str(value): label
            for value, label in zip(schema.classes, schema.class_labels, strict=True)
        },
        "report_id": report_id,
    }


def labelled_rows(labelled: pd.DataFrame, schema: FeatureSchema) -> tuple[pd.DataFrame, int]:
    """`PredictionReader.labelled` rows as training rows: the schema's features and the target
    from the feedback label, mapped back to the class it names (a model trained on 0/1/2 with
    labels setosa/... gets 0/1/2 again). Rows whose label names no class are left out; their
    count is the second value."""
    columns = [*schema.names, schema.target]
    if labelled.empty:
        return pd.DataFrame(columns=columns), 0
    by_label: dict[str, Any] = {}
    for value, label in zip(schema.classes, schema.class_labels, strict=False):
        by_label[str(value)] = value
        by_label[str(label)] = value  # the label wins where the two overlap
    target = labelled["actual"].map(lambda v: by_label.get(str(v)))
    keep = target.notna()
    features = {}
    for feature in schema.names:
        stored = f"{FEATURE_PREFIX}{feature}" if feature in LABELLED_COLUMNS else feature
        column = labelled[stored] if stored in labelled else pd.Series(None, index=labelled.index)
        features[feature] = column[keep].to_numpy()
    frame = pd.DataFrame(features)
    frame = schema.coerce(frame)
    frame[schema.target] = list(target[keep])
    # The database returns rows of equal time in any order, and the split that follows is by
    # position: sorted by content, the same rows always make the same training set.
    frame = frame.sort_values(list(frame.columns), kind="mergesort")
    return frame.reset_index(drop=True), int((~keep).sum())


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    frame.to_csv(partial, index=False)
    partial.replace(path)

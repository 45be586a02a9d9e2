"""A version's reference: its training rows, feature schema and held-out scores, fetched from
MLflow once and cached on local disk, since none of it changes between reports.

Every run that registered a version stored its exact training and held-out rows
(`runs:/<id>/data/train.parquet`, `eval.parquet`, see training.record); the reference of a
drift report is the former, sampled to `report_reference_rows`, with the columns typed by the
schema the model carries (not by Evidently's guesses).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lifecycle.core import mlflow_gateway
from lifecycle.core.schema import FeatureSchema
from reports.errors import ReportError
from training.record import DATA_DIR, TRAIN_FILE, data_artifact

# The held-out scores training records (training.metrics.score), live quality's baseline.
HELDOUT_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
_FORMAT = 1  # bump when the cached files change shape


@dataclass(frozen=True)
class Reference:
    model_name: str
    version: str
    run_id: str
    schema: FeatureSchema
    frame: pd.DataFrame  # the schema's features, typed by coerce(), at most the sample size
    training_rows: int  # before sampling
    heldout: dict[str, float]


def training_rows(run_id: str) -> pd.DataFrame:
    """The training rows a run stored (features and target), read from the tracking server
    the process is connected to. ReportError when the run has none."""
    uri = data_artifact(run_id, TRAIN_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise ReportError(
                f"run {run_id} has no training rows ({DATA_DIR}/{TRAIN_FILE} missing): "
                "was its model trained outside Lifecycle?"
            ) from exc
        return pd.read_parquet(path)


class ReferenceCache:
    """References by (model, version), kept under `root/<model>/<version>/`."""

    def __init__(self, client: MlflowClient, root: Path, sample_rows: int, seed: int) -> None:
        self._client = client
        self._root = root
        self._sample_rows = sample_rows
        self._seed = seed

    def get(self, model_name: str, version: str) -> Reference:
        folder = self._root / _safe(model_name) / _safe(version)
        cached = _read(folder, self._sample_rows)
        if cached is not None:
            return cached
        reference = self._fetch(model_name, version)
        _write(folder, reference, self._sample_rows)
        return reference

    def _fetch(self, model_name: str, version: str) -> Reference:
        mv = mlflow_gateway.get_version(self._client, model_name, version)
        if not mv.run_id:
            raise ReportError(f"version {version} of {model_name} has no run: no training rows")
        try:
            metadata = mlflow_gateway.model_metadata(f"models:/{model_name}/{version}")
        except MlflowException as exc:
            raise ReportError(
                f"version {version} of {model_name}: model unreadable ({exc.message[:200]})"
            ) from exc
        schema = FeatureSchema.from_metadata(metadata)
        rows = training_rows(mv.run_id)
        missing = [name for name in schema.names if name not in rows.columns]
        if missing:
            raise ReportError(
                f"version {version} of {model_name}: its training rows lack {missing}"
            )
        total = len(rows)
        if total > self._sample_rows:
            rows = rows.sample(self._sample_rows, random_state=self._seed)
        metrics = mlflow_gateway.get_run(self._client, mv.run_id).data.metrics
        return Reference(
            model_name=model_name,
            version=str(version),
            run_id=mv.run_id,
            schema=schema,
            frame=schema.coerce(rows).reset_index(drop=True),
            training_rows=total,
            heldout={k: float(metrics[k]) for k in HELDOUT_METRICS if k in metrics},
        )


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in part)


def _read(folder: Path, sample_rows: int) -> Reference | None:
    try:
        meta: dict[str, Any] = json.loads((folder / "reference.json").read_text())
        if meta.get("format") != _FORMAT or meta.get("sample_rows") != sample_rows:
            return None
        frame = pd.read_parquet(folder / "reference.parquet")
    except (OSError, ValueError):
        return None
    return Reference(
        model_name=meta["model_name"],
        version=meta["version"],
        run_id=meta["run_id"],
        schema=FeatureSchema.from_metadata(meta["schema"]),
        frame=frame,
        training_rows=int(meta["training_rows"]),
        heldout={k: float(v) for k, v in meta["heldout"].items()},
    )


def _write(folder: Path, reference: Reference, sample_rows: int) -> None:
    """Written to a temporary folder and renamed, so a reader never sees half a profile."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    reference.frame.to_parquet(tmp / "reference.parquet", index=False)
    meta = {
        "format": _FORMAT,
        "sample_rows": sample_rows,
        "model_name": reference.model_name,
        "version": reference.version,
        "run_id": reference.run_id,
        "schema": reference.schema.to_metadata(),
        "training_rows": reference.training_rows,
        "heldout": reference.heldout,
    }
    (tmp / "reference.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process cached it first (or an older format is there)
        _replace_dir(tmp, folder)


def _replace_dir(tmp: Path, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)

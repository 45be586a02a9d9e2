"""What a Spark executor does with its partitions of a scored file: label, store, pass on.

`StorePartition` is pickled by the driver and run by `DataFrame.mapInPandas` on every
executor. It receives Arrow batches that already carry the served version's class
probabilities (from `mlflow.pyfunc.spark_udf`), turns them into the answers the REST path
gives (prediction = the most probable class, label and probability keys through the served
model's class labels, as `serving.inference.infer` does), writes each batch to the prediction
store in columnar form (`PredictionStore.write_columns`, the bulk path /batch uses) and yields
the rows with their new columns for the output file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionStore
from lifecycle.core.store.chunks import numbered
from lifecycle.core.store.columns import PredictionColumns

# Internal columns the driver adds and the executors drop before writing the output file.
ROW = "__lifecycle_row"
PROBS = "__lifecycle_probabilities"
FEATURE_PREFIX = "__lifecycle_f"
# The columns /batch adds to a scored file (serving.batch_files.score_frame), in its order.
OUTPUT_COLUMNS = ("request_id", "prediction", "label", "probability", "model_version")


def feature_column(i: int) -> str:
    return f"{FEATURE_PREFIX}{i}"


@dataclass(frozen=True)
class ServedVersion:
    """What an executor needs of the served version: no model, only its identity and labels."""

    name: str
    version: str
    run_id: str | None
    features: tuple[str, ...]
    classes: tuple[Any, ...]
    labels: Mapping[Any, str]

    def label_of(self, value: Any) -> str:
        # The same rule as serving.runtime.loader.LoadedModel.label_of.
        label = self.labels.get(value)
        return label if label is not None else str(value)


@dataclass(frozen=True)
class StorePartition:
    """Runs on the executors: one store connection per partition, one write per Arrow batch.

    A task that Spark retries (or runs twice speculatively) writes the same request ids again,
    and the store skips ids it already holds, so each row is stored once however often its
    partition runs. `inserted` (a Spark accumulator) adds up how many rows were new: a task
    run twice adds its rows once, since the second run finds them stored.
    """

    settings: Settings
    served: ServedVersion
    job_id: str
    keep: tuple[str, ...]
    inserted: Any
    source: str = "batch"

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        store = PredictionStore.from_settings(self.settings)
        try:
            waited = time.perf_counter()
            for batch in batches:
                # The wait for a batch covers reading and scoring it upstream in this task:
                # divided among its rows, it is the per-row latency /batch stores for a chunk.
                latency_ms = (time.perf_counter() - waited) * 1000 / max(len(batch), 1)
                out, columns = self.score(batch, latency_ms)
                if len(columns):
                    self.inserted.add(store.write_columns(columns))
                yield out
                waited = time.perf_counter()
        finally:
            store.stop()

    def score(
        self, batch: pd.DataFrame, latency_ms: float
    ) -> tuple[pd.DataFrame, PredictionColumns]:
        served = self.served
        probs = np.vstack(list(batch[PROBS])) if len(batch) else np.empty((0, 0))
        classes = np.asarray(served.classes, dtype=object)
        predictions = [_plain(c) for c in classes[probs.argmax(axis=1)]] if len(batch) else []
        labels = [served.label_of(p) for p in predictions]
        names = [served.label_of(c) for c in served.classes]
        ids = [f"{self.job_id}-{int(r)}" for r in batch[ROW].tolist()]
        matrix = batch[[feature_column(i) for i in range(len(served.features))]]
        columns = PredictionColumns(
            request_ids=ids,
            created_at=datetime.now(UTC),
            source=self.source,
            model_name=served.name,
            model_version=served.version,
            run_id=served.run_id,
            feature_names=tuple(served.features),
            features=matrix.to_numpy(dtype=float),
            predictions=np.asarray(predictions),
            labels=labels,
            class_labels=tuple(names),
            probabilities=probs if len(batch) else np.empty((0, len(names))),
            latency_ms=latency_ms,
            numbered=numbered(ids, f"{self.job_id}-"),
        )
        out = batch[list(self.keep)].copy()
        out["request_id"] = ids
        text = prediction_type(served.classes) == "string"
        shown = [str(p) for p in predictions] if text else predictions
        out["prediction"] = pd.Series(shown, index=out.index, dtype=object)
        out["label"] = labels
        out["probability"] = probs.max(axis=1) if len(batch) else np.empty(0)
        out["model_version"] = served.version
        return out, columns


def prediction_type(classes: Sequence[Any]) -> str:
    """The Spark SQL type of the prediction column, from the classes' Python type."""
    if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "bigint"
    if classes and all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
        return "double"
    return "string"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value

"""Loading datasets named in conf/datasets.yaml into a frame and its feature schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split

from lifecycle.core.config import DatasetConfig
from lifecycle.core.errors import DataError
from lifecycle.core.schema import FeatureSchema

_SKLEARN_LOADERS = {
    "iris": sk_datasets.load_iris,
    "wine": sk_datasets.load_wine,
    "breast_cancer": sk_datasets.load_breast_cancer,
    "digits": sk_datasets.load_digits,
}
FILE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class Dataset:
    name: str
    frame: pd.DataFrame
    schema: FeatureSchema
    source: str

    @property
    def X(self) -> pd.DataFrame:
        return self.schema.coerce(self.frame)

    @property
    def y(self) -> pd.Series:
        return self.frame[self.schema.target]


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


def resolve_config(
    name: str,
    known: dict[str, DatasetConfig],
    target: str | None = None,
    class_labels: dict[str, str] | None = None,
) -> DatasetConfig:
    """A configured dataset by name, or a CSV/Parquet path given directly with its target (and
    optionally its classes' labels)."""
    update: dict[str, object] = {}
    if target:
        update["target"] = target
    if class_labels:
        update["class_labels"] = class_labels
    if name in known:
        return known[name].model_copy(update=update)
    if name.lower().endswith(FILE_SUFFIXES):
        if not target:
            raise DataError(f"dataset file {name}: give the target column (--target)")
        return DatasetConfig(source="file", path=name, **update)
    raise DataError(f"unknown dataset '{name}'; known: {', '.join(sorted(known)) or 'none'}")


def load(name: str, cfg: DatasetConfig) -> Dataset:
    if cfg.source == "sklearn":
        frame, schema, source = _load_sklearn(name, cfg)
    else:
        frame, schema, source = _load_file(name, cfg)
    _check_classes(name, frame, schema.target)
    return Dataset(name, frame, schema, source)


def split(data: Dataset, test_size: float, seed: int) -> Split:
    y = data.y
    counts = y.value_counts()
    n_test = max(round(len(y) * test_size), 1)
    stratify = y if counts.min() >= 2 and n_test >= len(counts) else None
    try:
        train, test = train_test_split(
            data.frame, test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise DataError(f"dataset {data.name}: cannot split {len(y)} rows: {exc}") from exc
    if train[data.schema.target].nunique() < 2:
        raise DataError(f"dataset {data.name}: the training split holds a single class")
    return Split(train.reset_index(drop=True), test.reset_index(drop=True))


def _load_sklearn(name: str, cfg: DatasetConfig) -> tuple[pd.DataFrame, FeatureSchema, str]:
    loader = _SKLEARN_LOADERS.get(cfg.loader or name)
    if loader is None:
        raise DataError(
            f"dataset {name}: unknown scikit-learn loader '{cfg.loader}'; "
            f"known: {', '.join(sorted(_SKLEARN_LOADERS))}"
        )
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    target = cfg.target or "target"
    if target != "target":
        frame = frame.rename(columns={"target": target})
    labels = {i: str(n) for i, n in enumerate(bunch.target_names)}
    schema = FeatureSchema.from_frame(frame, target, cfg.categorical, labels)
    return frame, schema, f"sklearn:{cfg.loader or name}"


def _load_file(name: str, cfg: DatasetConfig) -> tuple[pd.DataFrame, FeatureSchema, str]:
    if not cfg.path:
        raise DataError(f"dataset {name}: a file dataset needs a path")
    if not cfg.target:
        raise DataError(f"dataset {name}: a file dataset needs a target column")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise DataError(f"dataset {name}: file not found: {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"dataset {name}: file is empty: {path}") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"dataset {name}: cannot read {path}: {exc}") from exc
    if frame.empty:
        raise DataError(f"dataset {name}: file has no rows: {path}")
    if cfg.target not in frame.columns:
        raise DataError(
            f"dataset {name}: target column '{cfg.target}' not in {path} "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    unknown = [c for c in (*cfg.categorical, *cfg.drop) if c not in frame.columns]
    if unknown:
        raise DataError(f"dataset {name}: columns not in {path}: {', '.join(unknown)}")
    frame = frame.drop(columns=cfg.drop)
    frame = frame[frame[cfg.target].notna()].reset_index(drop=True)
    if len(frame.columns) < 2:
        raise DataError(f"dataset {name}: no feature columns besides the target")
    labels = _class_labels(name, frame[cfg.target], cfg.class_labels)
    schema = FeatureSchema.from_frame(frame, cfg.target, cfg.categorical, labels)
    return frame, schema, str(path.resolve())


def _class_labels(name: str, target: pd.Series, given: dict[Any, str]) -> dict[Any, str] | None:
    """The configured labels keyed by the class values the file holds (keys compared as text);
    DataError naming a class that has none."""
    if not given:
        return None
    by_text = {str(key): str(label) for key, label in given.items()}
    labels = {}
    for value in target.dropna().unique():
        label = by_text.get(str(value))
        if label is None:
            raise DataError(
                f"dataset {name}: class_labels has no label for class '{value}' "
                f"(labels given for: {', '.join(sorted(by_text))})"
            )
        labels[value] = label
    return labels


def _check_classes(name: str, frame: pd.DataFrame, target: str) -> None:
    n = frame[target].nunique()
    if n < 2:
        raise DataError(
            f"dataset {name}: target '{target}' has {n} class(es); a classifier needs at least 2"
        )

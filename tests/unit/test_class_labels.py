"""A file dataset's class labels (conf `class_labels`, `--class-labels`, `-P class_labels=`):
the model answers with them, as a scikit-learn dataset's model answers with its target names.
The retrain DAG relies on it: its training file holds class values, its labels come from the
served version."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lifecycle.core.config import DatasetConfig
from lifecycle.core.errors import ConfigError, DataError
from training.data import load, resolve_config
from training.train import parse_class_labels


def _file(tmp_path: Path) -> str:
    path = tmp_path / "rows.csv"
    pd.DataFrame({"x": [0.1, 0.2, 0.9, 1.0], "y": [0, 0, 1, 1]}).to_csv(path, index=False)
    return str(path)


def test_file_dataset_takes_the_labels_given_by_path(tmp_path: Path) -> None:
    path = _file(tmp_path)
    cfg = resolve_config(path, {}, "y", {"0": "low", "1": "high"})
    schema = load(path, cfg).schema
    assert schema.classes == (0, 1)
    assert schema.class_labels == ("low", "high")


def test_labels_from_conf_with_numeric_keys(tmp_path: Path) -> None:
    path = _file(tmp_path)
    known = {
        "rows": DatasetConfig(source="file", path=path, target="y", class_labels={0: "a", 1: "b"})
    }
    assert load("rows", resolve_config("rows", known)).schema.class_labels == ("a", "b")


def test_without_labels_the_values_are_the_labels(tmp_path: Path) -> None:
    path = _file(tmp_path)
    assert load(path, resolve_config(path, {}, "y")).schema.class_labels == ("0", "1")


def test_a_class_without_a_label_is_named(tmp_path: Path) -> None:
    path = _file(tmp_path)
    with pytest.raises(DataError, match="no label for class '1'"):
        load(path, resolve_config(path, {}, "y", {"0": "low"}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  ", None),
        ("{}", None),
        ('{"0": "setosa", "1": 2}', {"0": "setosa", "1": "2"}),
    ],
)
def test_parse(text: str, expected: dict[str, str] | None) -> None:
    assert parse_class_labels(text) == expected


@pytest.mark.parametrize("text", ["setosa", "[1, 2]", '{"0": '])
def test_parse_refuses_what_is_not_a_json_object(text: str) -> None:
    with pytest.raises(ConfigError, match="--class-labels"):
        parse_class_labels(text)

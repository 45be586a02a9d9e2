"""What the Predict form knows of each feature from the served version's training rows."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class FeatureHint:
    kind: str
    low: float | None = None
    high: float | None = None
    median: float | None = None
    categories: tuple[str, ...] = field(default_factory=tuple)

    def range_text(self) -> str | None:
        if self.low is None or self.high is None:
            return None
        return f"training range {self.low:g} to {self.high:g}"


def summarise(frame: pd.DataFrame, features: Sequence[Mapping[str, Any]]) -> dict[str, FeatureHint]:
    """Range and median of each numeric feature, the categories of each categorical one;
    a feature the rows lack has no hint."""
    hints: dict[str, FeatureHint] = {}
    for feature in features:
        name, kind = str(feature["name"]), str(feature["kind"])
        if name not in frame.columns:
            continue
        column = frame[name]
        if kind == "numeric":
            values = pd.to_numeric(column, errors="coerce").dropna()
            if values.empty:
                continue
            hints[name] = FeatureHint(
                kind, float(values.min()), float(values.max()), float(values.median())
            )
        else:
            categories = sorted({str(v) for v in column.dropna().unique()})
            hints[name] = FeatureHint(kind, categories=tuple(categories))
    return hints


def number_or_text(text: str) -> float | str | None:
    """A typed cell as the API should see it: a finite number as a number, an empty cell as
    missing, anything else as the text itself, so the API refuses it in its own words."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        value = float(stripped)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def csv_rows(data: bytes) -> int | None:
    """Data rows of a CSV upload (lines after the header, quoted newlines kept in their
    cell); None when it is not UTF-8 text."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    rows = sum(1 for row in csv.reader(io.StringIO(text)) if row)
    return max(rows - 1, 0)

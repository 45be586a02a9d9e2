"""Feedback labels and the per-version accuracy and precision computed from them (SQLite)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score, precision_score

from lifecycle.core.errors import NotFound
from lifecycle.core.store import PredictionStore
from tests.support.store_records import LABELS, make_record


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PredictionStore]:
    # A long flush interval: rows stay queued unless something flushes them.
    store = PredictionStore(f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "spool", flush_interval=5)
    store.start()
    yield store
    store.stop(timeout=2)


def test_feedback_stats_match_scikit_learn(store: PredictionStore) -> None:
    rng = random.Random(7)
    truth: dict[str, dict[str, str]] = {"1": {}, "2": {}}
    predicted: dict[str, dict[str, str]] = {"1": {}, "2": {}}
    records = []
    for i in range(120):
        version = "1" if i < 70 else "2"
        record = make_record(i, version=version, label=rng.choice(LABELS))
        records.append(record)
        predicted[version][record.request_id] = record.label or ""
    # Another model's predictions must not leak into this model's numbers.
    other = [make_record(i, model_name="other", label="setosa") for i in range(10)]
    store.write(records + other)
    for record in other:
        store.add_feedback(record.request_id, "virginica")

    for record in records[::2]:  # feedback on half the predictions
        version = record.model_version
        wrong = rng.choice(LABELS)
        store.add_feedback(record.request_id, wrong)
        right = record.label if rng.random() < 0.6 else rng.choice(LABELS)
        store.add_feedback(record.request_id, right or "")  # the last feedback wins
        truth[version][record.request_id] = right or ""

    stats = store.feedback_stats("iris-classifier")

    assert set(stats) == {"1", "2"}
    for version, labels in truth.items():
        ids = list(labels)
        y_true = [labels[i] for i in ids]
        y_pred = [predicted[version][i] for i in ids]
        assert stats[version]["n"] == len(ids)
        assert stats[version]["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
        assert stats[version]["precision_macro"] == pytest.approx(
            precision_score(y_true, y_pred, average="macro", zero_division=0)
        )
    assert stats["1"]["accuracy"] != stats["2"]["accuracy"]
    assert store.feedback_stats("other") == {
        "1": {"n": 10.0, "accuracy": 0.0, "precision_macro": 0.0}
    }
    assert store.feedback_stats("nobody") == {}


def test_feedback_flushes_a_prediction_still_in_the_queue(store: PredictionStore) -> None:
    record = make_record(1, label="setosa")
    store.submit(record)  # the writer would wait up to 5 s before writing it

    store.add_feedback(record.request_id, "versicolor")

    assert store.feedback_label(record.request_id) == "versicolor"
    assert store.feedback_stats("iris-classifier")["1"]["accuracy"] == 0.0


def test_feedback_for_an_unknown_request_is_not_found(store: PredictionStore) -> None:
    with pytest.raises(NotFound, match="no-such-id"):
        store.add_feedback("no-such-id", "setosa", timeout=0.5)
    assert NotFound.status_code == 404

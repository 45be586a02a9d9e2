"""The plain functions behind the Celery tasks and the plain-AMQP consumer, without a broker.

A real fitted iris pipeline and a real SQLite prediction store; the registry is replaced by a
fixed version (the integration tests follow a real one).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionStore
from serving.amqp import MalformedMessage, parse_message
from serving.async_scoring import score_request
from serving.batch_files import score_file
from serving.metrics import Metrics
from serving.runtime import ModelHolder, ModelTarget, Reconciler
from serving.validation import InvalidInput
from serving.wiring import Runtime
from tests.support.fixed_model import FixedVersion, load_iris


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    settings = Settings(data_dir=tmp_path / "data", batch_chunk_rows=7, max_batch_rows=100)
    target = ModelTarget("iris-classifier", stage="Production")
    holder = ModelHolder(target, FixedVersion(), load_iris)  # type: ignore[arg-type]
    holder.reconcile()
    store = PredictionStore.from_settings(settings)
    return Runtime(settings, holder, Reconciler(holder, 60), store, Metrics())


def _frame(n: int, schema_names: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    values = rng.normal([5.8, 3.0, 3.7, 1.2], 0.5, size=(n, 4)).round(2)
    frame = pd.DataFrame(values, columns=schema_names)
    frame.insert(0, "id", range(n))  # extra columns pass through untouched
    return frame


def _stored(runtime: Runtime, prefix: str) -> list[tuple[str, str, str]]:
    engine = sa.create_engine(runtime.settings.resolved_database_url())
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT request_id, source, model_version FROM prediction_rows "
                "WHERE request_id LIKE :p ORDER BY request_id"
            ),
            {"p": f"{prefix}%"},
        )
        return [tuple(r) for r in rows]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_file_is_scored_in_chunks_and_a_rerun_stores_nothing_twice(
    runtime: Runtime, tmp_path: Path, suffix: str
) -> None:
    names = list(runtime.holder.get().schema.names)
    source = tmp_path / f"in{suffix}"
    frame = _frame(50, names)
    frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)

    first = score_file(runtime, "task1", str(source))
    read = pd.read_csv if suffix == ".csv" else pd.read_parquet
    out = read(first["output"])
    assert first["rows"] == 50 and first["model"]["version"] == "7"
    assert list(out.columns) == [
        "id",
        *names,
        "request_id",
        "prediction",
        "label",
        "probability",
        "model_version",
    ]
    assert out["id"].tolist() == list(range(50))
    assert out["request_id"].tolist() == [f"task1-{i}" for i in range(50)]
    assert out["probability"].between(1 / 3, 1).all()
    assert set(out["model_version"].astype(str)) == {"7"}
    stored = _stored(runtime, "task1-")
    assert len(stored) == 50 and {(s, v) for _, s, v in stored} == {("batch", "7")}

    # A redelivered task scores the file again: same output, no duplicate predictions.
    again = score_file(runtime, "task1", str(source))
    assert read(again["output"]).equals(out)
    assert len(_stored(runtime, "task1-")) == 50
    assert not list(Path(first["output"]).parent.glob("*.partial"))


def test_bad_files_fail_with_the_row_and_feature_and_leave_no_output(
    runtime: Runtime, tmp_path: Path
) -> None:
    names = list(runtime.holder.get().schema.names)
    frame = _frame(20, names).astype({names[2]: object})
    frame.loc[12, names[2]] = "tall"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    message = re.escape(f"row 12: feature '{names[2]}' must be a number, got 'tall'")
    with pytest.raises(InvalidInput, match=message):
        score_file(runtime, "bad", str(bad))
    assert not list(runtime.settings.resolved_batch_dir().rglob("bad.*"))

    frame[[names[0]]].to_csv(tmp_path / "few.csv", index=False)
    with pytest.raises(InvalidInput, match="missing feature"):
        score_file(runtime, "few", str(tmp_path / "few.csv"))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InvalidInput, match="unsupported type"):
        score_file(runtime, "json", str(tmp_path / "x.json"))
    with pytest.raises(InvalidInput, match="does not exist"):
        score_file(runtime, "gone", str(tmp_path / "gone.csv"))


def test_score_request_answers_like_predict_and_stores_once(runtime: Runtime) -> None:
    one = score_request(runtime, "req-1", {"features": [5.1, 3.5, 1.4, 0.2]})
    assert one["label"] == "setosa" and one["model"]["version"] == "7"
    many = score_request(runtime, "req-2", {"instances": [[5.1, 3.5, 1.4, 0.2]] * 2})
    assert [p["request_id"] for p in many["predictions"]] == ["req-2-0", "req-2-1"]
    score_request(runtime, "req-1", {"features": [5.1, 3.5, 1.4, 0.2]})  # a redelivery
    assert _stored(runtime, "req-") == [
        ("req-1", "async", "7"),
        ("req-2-0", "async", "7"),
        ("req-2-1", "async", "7"),
    ]
    with pytest.raises(InvalidInput, match="expected 4 features"):
        score_request(runtime, "req-3", {"features": [1.0]})


def test_plain_amqp_messages_parse_or_say_why_not() -> None:
    assert parse_message(b'{"request_id": "a1", "features": [1, 2, 3, 4]}', {}) == (
        "a1",
        {"features": [1, 2, 3, 4]},
    )
    rid, body = parse_message('{"instances": [[1, 2, 3, 4]]}', {"message_id": "m-9"})
    assert rid == "m-9" and body == {"instances": [[1, 2, 3, 4]]}
    assert len(parse_message(b'{"features": []}', {})[0]) == 32  # generated when none given
    for raw, reason in [
        (b"{oops", "malformed JSON"),
        (b"\x80{}", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"features": [NaN, 1, 2, 3]}', "not a valid number"),
        (b'{"request_id": 5, "features": [1, 2, 3, 4]}', "request_id must be a string"),
    ]:
        with pytest.raises(MalformedMessage, match=reason):
            parse_message(raw, {})

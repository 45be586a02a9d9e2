"""The pipeline tasks' logic that needs no stack: conf/pipelines.yaml, claiming files, an API
that is down, the retrain decision, labelled rows as training rows, the worker's version."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest

from lifecycle.core.config import BatchConfig, RetrainConfig, load_pipelines
from lifecycle.core.errors import ConfigError
from lifecycle.core.schema import Feature, FeatureSchema
from lifecycle.core.settings import PROJECT_ROOT, Settings
from lifecycle.core.store.report_index import ReportEntry
from pipelines import tasks
from pipelines.api import ServiceUnreachable, served_version
from pipelines.batch import claim_files, score_file
from pipelines.drift import decide
from pipelines.training_set import labelled_rows, safe_name
from tests.support.services import free_port

SCHEMA = FeatureSchema(
    (Feature("a", "numeric"), Feature("label", "numeric")),
    "species",
    (0, 1, 2),
    ("setosa", "versicolor", "virginica"),
)


# conf/pipelines.yaml


def test_the_shipped_pipelines_conf_loads_with_its_documented_values() -> None:
    config = load_pipelines(PROJECT_ROOT / "conf")
    assert config.experiment == "lifecycle-pipelines"
    assert config.retrain.stage == "Production"
    assert (config.retrain.min_accuracy, config.retrain.min_labelled) == (0.8, 30)
    assert (config.retrain.serve_timeout, config.retrain.first_prediction_wait) == (120, 60)
    assert (config.batch.task_timeout, config.batch.poll_interval) == (600, 1)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("retrain: {stage: Archived}\n", "retrain.stage"),
        ("retrain: {min_accuracy: 1.5}\n", "retrain.min_accuracy"),
        ("batch: {poll_interval: 0}\n", "batch.poll_interval"),
        ("retrain: {stages: Production}\n", "retrain.stages"),
    ],
)
def test_a_bad_pipelines_conf_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    (tmp_path / "pipelines.yaml").write_text(text)
    with pytest.raises(ConfigError, match=f"pipelines.yaml: {field}"):
        load_pipelines(tmp_path)


def test_context_reads_the_settings_and_the_conf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFECYCLE_MODEL_NAME", "m1")
    monkeypatch.setenv("LIFECYCLE_API_URL", "http://api.example:1/")
    monkeypatch.setenv("LIFECYCLE_PIPELINE_DIR", str(tmp_path / "p"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:2")
    answer = tasks.context()
    assert answer == {
        "model_name": "m1",
        "api_url": "http://api.example:1",
        "tracking_uri": "http://mlflow.example:2",
        "experiment_name": Settings().experiment_name,
        "monitoring_experiment": "lifecycle-monitoring",
        "pipelines_experiment": "lifecycle-pipelines",
        "retrain_stage": "Production",
        "pipeline_dir": str((tmp_path / "p").resolve()),
    }
    json.dumps(answer)  # an XCom


# Claiming files


def test_claim_moves_only_finished_csv_and_parquet_files(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("b.csv", "a.parquet", "c.CSV", ".hidden.csv", "d.csv.partial", "notes.txt"):
        (inbox / name).write_text("x\n1\n")
    (inbox / "sub.csv").mkdir()
    claimed = claim_files(tmp_path)
    assert [Path(p).name for p in claimed] == ["a.parquet", "b.csv", "c.CSV"]
    assert all(Path(p).parent == tmp_path / "processing" and Path(p).is_file() for p in claimed)
    assert sorted(p.name for p in inbox.iterdir()) == [
        ".hidden.csv",
        "d.csv.partial",
        "notes.txt",
        "sub.csv",
    ]
    assert {p.name for p in tmp_path.iterdir()} == {"inbox", "processing", "done", "failed"}
    assert claim_files(tmp_path) == []


def test_a_name_claimed_twice_keeps_both_files(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "x.csv").write_text("first\n")
    first = claim_files(tmp_path)
    (tmp_path / "inbox" / "x.csv").write_text("second\n")
    second = claim_files(tmp_path)
    assert Path(first[0]).read_text() == "first\n"
    assert Path(second[0]).read_text() == "second\n" and second != first


def test_an_unreachable_api_puts_the_file_back_and_fails(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "x.csv").write_text("a,b\n1,2\n")
    [path] = claim_files(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnreachable, match=r"API unreachable at .*x.csv returned to inbox"):
        score_file(url, BatchConfig(), path)
    assert (tmp_path / "inbox" / "x.csv").read_text() == "a,b\n1,2\n"
    assert not Path(path).exists()


# The retrain decision


def _entry(verdict: str, quality: dict[str, dict[str, float]] | None) -> ReportEntry:
    return ReportEntry(
        id=uuid.uuid4().hex,
        created_at=datetime.now(UTC),
        model_name="iris",
        model_version="1",
        window={},
        rows=200,
        sampled_rows=200,
        reference_rows=112,
        labelled_rows=sum(int(q["n"]) for q in (quality or {}).values()),
        drift_share=0.75 if verdict == "drift" else 0.0,
        drifted_features=["a", "b", "c"] if verdict == "drift" else [],
        verdict=verdict,
        features=[],
        quality=quality,
        run_id="f" * 32,
    )


def test_no_drift_and_good_accuracy_ask_for_no_retrain() -> None:
    answer = decide(_entry("no_drift", {"1": {"n": 100, "accuracy": 0.95}}), RetrainConfig())
    assert answer["retrain"] is False and answer["reasons"] == []
    assert answer["report_run_id"] == "f" * 32
    assert (answer["accuracy"], answer["labelled_rows"], answer["min_accuracy"]) == (0.95, 100, 0.8)


def test_drift_asks_for_a_retrain() -> None:
    answer = decide(_entry("drift", None), RetrainConfig())
    assert answer["retrain"] is True
    assert answer["reasons"] == ["drift: 75% of the features drifted (a, b, c)"]
    assert answer["accuracy"] is None and answer["labelled_rows"] == 0


def test_low_accuracy_asks_for_a_retrain_only_over_enough_labelled_rows() -> None:
    low = {"1": {"n": 40, "accuracy": 0.5}, "0": {"n": 500, "accuracy": 0.1}}
    answer = decide(_entry("no_drift", low), RetrainConfig())
    assert answer["retrain"] is True
    assert answer["reasons"] == ["live accuracy 0.500 < 0.8 over 40 predictions with feedback"]
    few = decide(_entry("no_drift", {"1": {"n": 29, "accuracy": 0.1}}), RetrainConfig())
    assert few["retrain"] is False and few["labelled_rows"] == 29


# Labelled rows as training rows


def test_labelled_rows_take_the_class_their_feedback_label_names() -> None:
    labelled = pd.DataFrame(
        {
            "request_id": ["r1", "r2", "r3", "r4"],
            "created_at": pd.to_datetime(["2026-01-01"] * 4, utc=True),
            "model_version": ["1"] * 4,
            "label": ["setosa"] * 4,
            "actual": ["virginica", "0", "unknown", "versicolor"],
            "a": [1.0, 2.0, 3.0, 4.0],
            # A feature named like a fixed column is stored with the prefix.
            "features.label": [5.0, 6.0, 7.0, 8.0],
        }
    )
    rows, dropped = labelled_rows(labelled, SCHEMA)
    assert dropped == 1
    assert list(rows.columns) == ["a", "label", "species"]
    assert rows.to_dict("list") == {
        "a": [1.0, 2.0, 4.0],
        "label": [5.0, 6.0, 8.0],
        "species": [2, 0, 1],
    }


def test_labelled_rows_make_the_same_training_rows_whatever_order_they_come_in() -> None:
    labelled = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(6)],
            "created_at": pd.to_datetime(["2026-01-01"] * 6, utc=True),
            "model_version": ["1"] * 6,
            "label": ["setosa"] * 6,
            "actual": ["virginica", "setosa", "versicolor", "setosa", "virginica", "setosa"],
            "a": [3.0, 1.0, 2.0, 1.0, 0.5, 4.0],
            "features.label": [1.0, 9.0, 2.0, 8.0, 3.0, 7.0],
        }
    )
    first, _ = labelled_rows(labelled, SCHEMA)
    again, _ = labelled_rows(labelled.iloc[[4, 2, 5, 0, 3, 1]], SCHEMA)
    assert first.to_dict("list") == again.to_dict("list")
    assert first["a"].tolist() == [0.5, 1.0, 1.0, 2.0, 3.0, 4.0]


def test_no_labelled_rows_give_an_empty_frame_with_the_columns() -> None:
    rows, dropped = labelled_rows(pd.DataFrame(), SCHEMA)
    assert (list(rows.columns), len(rows), dropped) == (["a", "label", "species"], 0, 0)


def test_a_dag_run_id_becomes_one_path_segment() -> None:
    assert safe_name("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00_00_00_00_00"
    assert safe_name("../..") == "_"
    assert safe_name("..") == "run"


# The worker's served version, from its /metrics


def test_the_served_version_is_the_model_info_series_at_one() -> None:
    text = "\n".join(
        [
            "# HELP lifecycle_model_info The served model.",
            "# TYPE lifecycle_model_info gauge",
            'lifecycle_model_info{name="iris",version="1",stage="Archived",alias="",run_id="a"} 0',
            'lifecycle_model_info{name="iris",version="2",stage="P",alias="",run_id="b"} 1',
            'lifecycle_model_info{name="wine",version="7",stage="P",alias="",run_id="c"} 1',
        ]
    )
    assert served_version(text, "iris") == "2"
    assert served_version(text, "wine") == "7"
    assert served_version(text, "other") is None


def test_an_api_error_body_is_one_line() -> None:
    from reports.simulate import answer_detail as detail

    assert detail(httpx.Response(415, json={"detail": "content type must be ..."})) == (
        "content type must be ..."
    )
    assert detail(httpx.Response(502, text="bad gateway")) == "bad gateway"


# The retrain's `mlflow run`


def test_the_retrain_runs_the_main_entry_point_with_the_training_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.promotion import _environment, mlflow_run_command

    settings = Settings(experiment_name="exp", tracking_uri="http://mlflow.example:5")
    training = {
        "path": str(tmp_path / "train.csv"),
        "target": "species",
        "class_labels": {"0": "setosa", "1": "versicolor"},
    }
    command = mlflow_run_command(settings, training, "iris-m", "Staging", "after report r1")
    assert command[1:] == [
        "-m",
        "mlflow",
        "run",
        str(PROJECT_ROOT),
        "-e",
        "main",
        "--env-manager",
        "local",
        "--experiment-name",
        "exp",
        "-P",
        f"dataset={tmp_path / 'train.csv'}",
        "-P",
        "target=species",
        "-P",
        'class_labels={"0": "setosa", "1": "versicolor"}',
        "-P",
        "model_name=iris-m",
        "-P",
        "stage=Staging",
        "-P",
        "reason=after report r1",
    ]
    # An experiment this process was in (mlflow.set_experiment exports it) is not passed on:
    # `mlflow run` refuses it beside --experiment-name.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "7")
    monkeypatch.setenv("PATH", "/airflow/venv/bin")
    env = _environment(settings)
    assert "MLFLOW_EXPERIMENT_ID" not in env
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5"
    assert env["PATH"].split(":")[0] == str(Path(command[0]).parent)

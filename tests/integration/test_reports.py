"""Drift and live-quality reports on the real stack: simulated traffic through the API (prediction
store and tracking server on PostgreSQL), reports logged to MLflow and indexed, shown by
/reports and /metrics; and every refusal as one line of the real CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from lifecycle.core.errors import LifecycleError
from lifecycle.core.store.report_index import ReportEntry, ReportIndex
from reports.publish import TAG_PREFIX, VERSION_TAG_REPORT
from reports.runner import make_report
from reports.window import ReportRequest
from tests.support.api import metric_value
from tests.support.cli import cli_env, run_cli
from tests.support.stack import Stack
from tests.support.traffic import simulated
from training.train import TrainRequest, train

SHIFTED = ("petal length (cm)", "sepal width (cm)")


def _artifacts(client: MlflowClient, run_id: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id)}


@pytest.fixture(scope="module")
def reports(stack: Stack) -> Iterator[tuple[ReportEntry, ReportEntry]]:
    """An unshifted window, then one with two shifted features (400 rows each)."""
    simulated(stack, 400)
    plain = make_report(stack.settings, ReportRequest(last=400)).entry
    shifts = tuple(f"{name}=+1.5" for name in SHIFTED)
    simulated(stack, 400, shifts=shifts)
    shifted = make_report(stack.settings, ReportRequest(last=400)).entry
    yield plain, shifted


def test_unshifted_traffic_does_not_drift_and_two_shifted_features_do(
    stack: Stack, reports: tuple[ReportEntry, ReportEntry]
) -> None:
    plain, shifted = reports

    assert plain.verdict == "no_drift" and plain.drifted_features == []
    assert plain.rows == plain.sampled_rows == 400
    assert shifted.verdict == "drift"
    assert sorted(shifted.drifted_features) == sorted(SHIFTED)
    assert shifted.drift_share == 0.5
    drifted = {f.feature for f in shifted.features if f.drifted}
    assert drifted == set(SHIFTED)
    assert all(f.test == "K-S p_value" for f in shifted.features)
    assert shifted.model_version == "1" and shifted.window["versions"] == ["1"]


def test_both_reports_are_in_mlflow_and_in_the_index(
    stack: Stack, reports: tuple[ReportEntry, ReportEntry]
) -> None:
    client = MlflowClient(stack.settings.resolved_tracking_uri())
    index = ReportIndex(stack.settings.resolved_database_url())
    try:
        for entry in reports:
            assert entry.run_id is not None
            run = client.get_run(entry.run_id)
            assert run.info.status == "FINISHED"
            tags = run.data.tags
            assert tags[f"{TAG_PREFIX}id"] == entry.id
            assert tags[f"{TAG_PREFIX}model_name"] == stack.name
            assert tags[f"{TAG_PREFIX}model_version"] == "1"
            assert tags[f"{TAG_PREFIX}verdict"] == entry.verdict
            assert json.loads(tags[f"{TAG_PREFIX}window"])["last"] == 400
            assert run.data.metrics["drift_share"] == entry.drift_share
            assert {"drift.html", "drift.json", "summary.json"} <= _artifacts(client, entry.run_id)
            html = mlflow.artifacts.load_text(entry.artifacts["drift_html"])
            assert "<html" in html.lower() and "petal length (cm)" in html
            indexed = index.get(entry.id)
            assert indexed is not None
            assert indexed.verdict == entry.verdict
            assert indexed.drifted_features == entry.drifted_features
            assert indexed.features == entry.features
        newest = reports[1]
        version = client.get_model_version(stack.name, "1")
        assert version.tags[VERSION_TAG_REPORT] == newest.id
    finally:
        index.dispose()


def test_api_and_metrics_show_the_newest_report(
    stack: Stack, reports: tuple[ReportEntry, ReportEntry]
) -> None:
    shifted = reports[1]
    with stack.client() as api:
        latest = api.get("/reports/latest", params={"model": stack.name})
        assert latest.status_code == 200, latest.text
        assert latest.json()["id"] == shifted.id
        assert sorted(latest.json()["drifted_features"]) == sorted(SHIFTED)
        listed = api.get("/reports", params={"model": stack.name}).json()["reports"]
        assert [r["id"] for r in listed[:2]] == [shifted.id, reports[0].id]
        page = api.get(f"/reports/{shifted.id}.html")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        deadline = time.monotonic() + 15  # the gauges are cached for a few seconds
        while True:
            text = api.get("/metrics").text
            share = metric_value(text, "lifecycle_drift_share", model=stack.name, version="1")
            if share == 0.5 or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert share == 0.5
    for feature in ("sepal length (cm)", "sepal width (cm)", "petal length (cm)"):
        drifted = metric_value(
            text, "lifecycle_feature_drifted", model=stack.name, version="1", feature=feature
        )
        assert drifted == (1.0 if feature in SHIFTED else 0.0), feature
    age = metric_value(text, "lifecycle_report_age_seconds", model=stack.name)
    assert 0 <= age < 600


def test_live_quality_matches_the_feedback_sent_per_version(
    stack: Stack, reports: tuple[ReportEntry, ReportEntry]
) -> None:
    first = simulated(stack, 400, feedback_accuracy=0.7)
    assert first.version == "1"
    v2 = train(stack.settings, TrainRequest(dataset="iris", register=True, model_name=stack.name))
    MlflowClient(stack.settings.resolved_tracking_uri()).transition_model_version_stage(
        stack.name, str(v2.version), "Production", archive_existing_versions=True
    )
    _wait_serving(stack, str(v2.version))
    second = simulated(stack, 400, feedback_accuracy=0.9)
    assert second.version == str(v2.version)

    report = make_report(
        stack.settings, ReportRequest(since=datetime.now(UTC) - timedelta(minutes=30))
    ).entry
    assert report.quality is not None
    by_version = report.quality
    for result, accuracy in ((first, 0.7), (second, 0.9)):
        figures = by_version[result.version]
        assert figures["n"] == 400
        # Exactly what was sent (the simulator counts the feedback that agreed) ...
        assert figures["accuracy"] == pytest.approx(result.feedback_correct / 400)
        # ... which is the chosen accuracy within sampling error (3 standard deviations).
        assert abs(figures["accuracy"] - accuracy) < 3 * (accuracy * (1 - accuracy) / 400) ** 0.5
        assert 0 < figures["f1"] <= 1 and 0 < figures["precision"] <= 1
        assert sum(sum(row.values()) for row in figures["confusion"].values()) == 400
        assert figures["heldout"]["accuracy"] > 0.8  # iris, from the training run
    assert report.model_version == str(v2.version)  # the newest prediction's version
    assert report.labelled_rows == 800
    client = MlflowClient(stack.settings.resolved_tracking_uri())
    assert report.run_id is not None
    assert {"quality.html", "quality.json"} <= _artifacts(client, report.run_id)
    metrics = client.get_run(report.run_id).data.metrics
    assert metrics["v1_accuracy"] == pytest.approx(by_version["1"]["accuracy"])


def _wait_serving(stack: Stack, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with stack.client() as api:
        while api.get("/model").json().get("version") != version:
            assert time.monotonic() < deadline, f"the API never served v{version}"
            time.sleep(0.5)


def test_refusals_say_why_before_any_work(stack: Stack) -> None:
    """Each refusal names its cause; no MLflow run or index row is left behind."""
    no_rows = _register_without_training_rows(stack)
    future = datetime.now(UTC) + timedelta(hours=1)
    cases: dict[ReportRequest, str] = {
        ReportRequest(model_name="no-such-model"): "registered model no-such-model not found",
        ReportRequest(version="99"): f"model {stack.name} has no version 99",
        ReportRequest(since=future): f"no predictions of {stack.name} in the window (since ",
        ReportRequest(last=5): "only 5 predictions of",
        ReportRequest(version=no_rows): "has no training rows (data/train.parquet missing)",
    }
    index = ReportIndex(stack.settings.resolved_database_url())
    before = len(index.list(model_name=stack.name, limit=500))
    try:
        for request, message in cases.items():
            with pytest.raises(LifecycleError) as refused:
                make_report(stack.settings, request)
            assert message in refused.value.message, request
            assert "\n" not in refused.value.message
        assert len(index.list(model_name=stack.name, limit=500)) == before
    finally:
        index.dispose()


def test_the_cli_refuses_in_one_line(stack: Stack) -> None:
    """Through the real CLI: exit 2, one line on stderr, no traceback."""
    env = cli_env(stack.settings, LIFECYCLE_MODEL_NAME=stack.name)
    done = run_cli("drift", "--model", "no-such-model", env=env)
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "error: registered model no-such-model not found",
    )
    done = run_cli("drift", "--since", "soon", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: since: 'soon' is neither a duration")
    down = cli_env(stack.settings, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    done = run_cli("drift", env=down)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: MLflow tracking server unreachable at http://127.0.0.1:9 (ConnectError)"
    )


def test_cli_prints_the_table_writes_html_and_fails_on_drift_when_asked(
    stack: Stack, reports: tuple[ReportEntry, ReportEntry], tmp_path: Path
) -> None:
    env = cli_env(stack.settings, LIFECYCLE_MODEL_NAME=stack.name)
    simulated(stack, 200, shifts=tuple(f"{name}=+1.5" for name in SHIFTED))
    html = tmp_path / "drift.html"
    done = run_cli("drift", "--last", "200", "--html", str(html), "--fail-on-drift", env=env)
    assert done.returncode == 3, done.stderr
    assert "verdict: drift (2 of 4 features drifted, share 0.50)" in done.stdout
    table = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    assert table["petal length (cm)"].rstrip().endswith("yes")
    assert table["sepal length (cm)"].rstrip().endswith("no")
    assert "<html" in html.read_text().lower()
    relaxed = run_cli("drift", "--last", "200", env=env)
    assert relaxed.returncode == 0 and "verdict: drift" in relaxed.stdout


def _register_without_training_rows(stack: Stack) -> str:
    """A version of the served model logged outside Lifecycle's training: its run stores the
    model with Lifecycle's schema, but no data/train.parquet."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from lifecycle.core.schema import FeatureSchema

    frame = load_iris(as_frame=True).frame
    schema = FeatureSchema.from_frame(frame, "target")
    model = LogisticRegression(max_iter=500).fit(frame[schema.names], frame["target"])
    mlflow.set_experiment(stack.settings.experiment_name)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=schema.signature(),
            metadata=schema.to_metadata(),
            registered_model_name=stack.name,
        )
    assert info.registered_model_version is not None
    return str(info.registered_model_version)


def test_report_http_errors(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api.url, timeout=30) as api:
        assert api.get("/reports/latest", params={"model": "no-such-model"}).status_code == 404
        assert api.get("/reports/0123456789abcdef0123456789abcdef").status_code == 404

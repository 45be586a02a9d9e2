"""The drift gauges on /metrics: read from the report index at scrape time, once per scrape.

Each test builds a real index (a SQLite file, and the test PostgreSQL), registers the gauges
with `Metrics.watch_reports` as create_app does and reads what a scrape would return.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lifecycle.core.settings import PROJECT_ROOT
from lifecycle.core.store.report_index import FeatureDrift, ReportEntry, ReportIndex
from serving.metrics import Metrics, ReportGauges
from tests.support.services import free_port, temp_database

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
DRIFT_GAUGES = (
    "lifecycle_drift_share",
    "lifecycle_feature_drift_score",
    "lifecycle_feature_drifted",
    "lifecycle_report_age_seconds",
)


def _entry(
    model: str, version: str, age: timedelta, share: float, features: list[FeatureDrift]
) -> ReportEntry:
    return ReportEntry(
        id=uuid.uuid4().hex,
        created_at=datetime.now(UTC) - age,
        model_name=model,
        model_version=version,
        window={"model": model, "version": version},
        rows=100,
        sampled_rows=100,
        reference_rows=150,
        labelled_rows=0,
        drift_share=share,
        drifted_features=[f.feature for f in features if f.drifted],
        verdict="drift" if share >= 0.5 else "no_drift",
        features=features,
    )


def _feature(name: str, score: float, drifted: bool) -> FeatureDrift:
    return FeatureDrift(name, "num", "K-S p_value", score, 0.05, drifted)


def _samples(text: bytes) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _of(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReportIndex]:
    if request.param == "sqlite":
        found = ReportIndex(f"sqlite:///{tmp_path / 'app.db'}")
        yield found
        found.dispose()
        return
    with temp_database("lc_gauges") as url:
        found = ReportIndex(url)
        yield found
        found.dispose()


class CountingIndex(ReportIndex):
    """A real index that counts the reads the gauges make."""

    reads = 0

    def latest_per_version(self) -> list[ReportEntry]:
        self.reads += 1
        return super().latest_per_version()


def _fill(index: ReportIndex) -> None:
    # iris v2's older report (drift) must not show: its newer one (no drift) replaced it.
    index.add(_entry("iris", "2", timedelta(hours=2), 0.75, [_feature("petal", 0.001, True)]))
    index.add(
        _entry(
            "iris",
            "2",
            timedelta(minutes=10),
            0.25,
            [_feature("petal", 0.4, False), _feature("sepal", 0.01, True)],
        )
    )
    index.add(
        _entry(
            "iris",
            "3",
            timedelta(minutes=2),
            0.5,
            [_feature("petal", 0.002, True), _feature("sepal", 0.3, False)],
        )
    )
    index.add(_entry("wine", "1", timedelta(seconds=30), 0.0, [_feature("alcohol", 0.9, False)]))


def test_gauges_show_the_newest_report_of_every_version(index: ReportIndex) -> None:
    _fill(index)
    metrics = Metrics()
    metrics.watch_reports(index, 300.0)

    samples = _samples(generate_latest(metrics.registry))

    assert _of(samples, "lifecycle_drift_share") == {
        frozenset({"model": "iris", "version": "2"}.items()): 0.25,
        frozenset({"model": "iris", "version": "3"}.items()): 0.5,
        frozenset({"model": "wine", "version": "1"}.items()): 0.0,
    }
    scores = {
        (dict(k)["model"], dict(k)["version"], dict(k)["feature"]): v
        for k, v in _of(samples, "lifecycle_feature_drift_score").items()
    }
    assert scores == {
        ("iris", "2", "petal"): 0.4,
        ("iris", "2", "sepal"): 0.01,
        ("iris", "3", "petal"): 0.002,
        ("iris", "3", "sepal"): 0.3,
        ("wine", "1", "alcohol"): 0.9,
    }
    drifted = {
        (dict(k)["model"], dict(k)["version"], dict(k)["feature"]): v
        for k, v in _of(samples, "lifecycle_feature_drifted").items()
    }
    assert drifted == {
        ("iris", "2", "petal"): 0.0,
        ("iris", "2", "sepal"): 1.0,
        ("iris", "3", "petal"): 1.0,
        ("iris", "3", "sepal"): 0.0,
        ("wine", "1", "alcohol"): 0.0,
    }
    ages = {dict(k)["model"]: v for k, v in _of(samples, "lifecycle_report_age_seconds").items()}
    assert set(ages) == {"iris", "wine"}
    # The model's newest report, whatever its version: iris v3, two minutes ago.
    assert 120 <= ages["iris"] < 150
    assert 30 <= ages["wine"] < 60
    assert _value(samples, "lifecycle_report_interval_seconds") == 300.0
    assert _value(samples, "lifecycle_report_index_up") == 1.0


def test_gauges_appear_once_in_multiprocess_mode(tmp_path: Path) -> None:
    index = ReportIndex(f"sqlite:///{tmp_path / 'app.db'}")
    _fill(index)
    workers = tmp_path / "prometheus"
    workers.mkdir()
    metrics = Metrics(multiprocess_dir=str(workers))
    metrics.watch_reports(index, 300.0)

    text = metrics.render().decode()

    share_lines = [line for line in text.splitlines() if line.startswith("lifecycle_drift_share{")]
    assert len(share_lines) == 3
    assert text.count("# TYPE lifecycle_drift_share gauge") == 1
    assert _value(_samples(text.encode()), "lifecycle_report_interval_seconds") == 300.0
    index.dispose()


@pytest.mark.parametrize("where", ["closed port", "uncreatable file"])
def test_an_unreadable_index_leaves_the_rest_of_the_scrape(where: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    url = {
        "closed port": f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/postgres",
        # A directory that cannot exist: its parent is a file.
        "uncreatable file": f"sqlite:///{blocker / 'app.db'}",
    }[where]
    metrics = Metrics()
    metrics.observe_request("/predict", "POST", 200, 0.01)
    metrics.watch_reports(ReportIndex(url), 600.0)

    samples = _samples(metrics.render())

    assert not [name for name, _ in samples if name in DRIFT_GAUGES]
    assert _value(samples, "lifecycle_report_index_up") == 0.0
    assert _value(samples, "lifecycle_report_interval_seconds") == 600.0
    assert (
        _value(
            samples, "lifecycle_requests_total", endpoint="/predict", method="POST", status="200"
        )
        == 1.0
    )


def test_scrapes_within_the_cache_period_cost_one_read(tmp_path: Path) -> None:
    index = CountingIndex(f"sqlite:///{tmp_path / 'app.db'}")
    _fill(index)
    metrics = Metrics()

    metrics.watch_reports(index, 300.0)
    # Registering describes the gauges without reading: create_app must not query the index.
    assert index.reads == 0

    first = _samples(metrics.render())
    second = _samples(metrics.render())

    assert index.reads == 1
    assert _of(first, "lifecycle_drift_share") == _of(second, "lifecycle_drift_share")
    index.dispose()


def test_a_new_report_shows_once_the_cache_expires(tmp_path: Path) -> None:
    index = ReportIndex(f"sqlite:///{tmp_path / 'app.db'}")
    index.add(_entry("iris", "3", timedelta(minutes=5), 0.25, [_feature("petal", 0.3, False)]))
    now = datetime.now(UTC)
    gauges = ReportGauges(index, 300.0, cache_seconds=0.0, clock=lambda: now)
    metrics = Metrics()
    metrics.registry.register(gauges)

    before = _samples(metrics.render())
    index.add(_entry("iris", "3", timedelta(0), 0.75, [_feature("petal", 0.001, True)]))
    after = _samples(metrics.render())

    assert _value(before, "lifecycle_drift_share", model="iris", version="3") == 0.25
    assert _value(after, "lifecycle_drift_share", model="iris", version="3") == 0.75
    assert _value(after, "lifecycle_feature_drifted", model="iris", version="3", feature="petal")
    assert _value(before, "lifecycle_report_age_seconds", model="iris") == pytest.approx(300, abs=5)
    assert _value(after, "lifecycle_report_age_seconds", model="iris") == pytest.approx(0, abs=5)
    index.dispose()


def test_alerts_and_dashboard_query_only_report_gauges_the_api_exports(tmp_path: Path) -> None:
    # A renamed gauge must break here, not silently empty a panel or mute an alert.
    index = ReportIndex(f"sqlite:///{tmp_path / 'app.db'}")
    _fill(index)
    metrics = Metrics()
    metrics.watch_reports(index, 300.0)
    exported = {name for name, _ in _samples(metrics.render())}
    index.dispose()
    conf = PROJECT_ROOT / "conf"
    text = (conf / "alerts.yml").read_text() + (
        conf / "grafana/dashboards/lifecycle.json"
    ).read_text()
    queried = set(re.findall(r"lifecycle_(?:drift|feature|report)\w*", text))

    assert queried >= set(DRIFT_GAUGES) | {"lifecycle_report_interval_seconds"}
    assert queried <= exported, f"not exported: {queried - exported}"


def test_watching_again_replaces_the_previous_index(tmp_path: Path) -> None:
    old = ReportIndex(f"sqlite:///{tmp_path / 'old.db'}")
    old.add(_entry("iris", "1", timedelta(minutes=1), 1.0, [_feature("petal", 0.0, True)]))
    new = ReportIndex(f"sqlite:///{tmp_path / 'new.db'}")
    _fill(new)
    metrics = Metrics()

    metrics.watch_reports(old, 300.0)
    metrics.watch_reports(new, 60.0)
    samples = _samples(metrics.render())

    assert {dict(k)["version"] for k in _of(samples, "lifecycle_drift_share")} == {"1", "2", "3"}
    assert (
        "lifecycle_drift_share",
        frozenset({"model": "iris", "version": "1"}.items()),
    ) not in samples
    assert _value(samples, "lifecycle_report_interval_seconds") == 60.0
    old.dispose()
    new.dispose()

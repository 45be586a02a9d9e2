"""Pure registry logic: gate decisions, stage names, gates.yaml parsing, audit tags, file lock."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from lifecycle.core.config import GatesConfig, load_gates
from lifecycle.core.errors import ConfigError
from lifecycle.core.settings import PROJECT_ROOT, Settings
from registry import audit
from registry.gates import (
    MINIMUM,
    QUALITY,
    SIGNATURE,
    GateResult,
    enforce,
    minimum_gate,
    quality_gate,
    signature_gate,
)
from registry.lock import LockTimeout, lock_key, promotion_lock
from registry.stages import normalize_stage


def test_quality_gate_allows_the_margin_and_refuses_beyond_it() -> None:
    ok = quality_gate("f1_macro", 0.95, 0.955, margin=0.01)
    assert ok.passed
    assert ok.numbers["threshold"] == pytest.approx(0.945)
    worse = quality_gate("f1_macro", 0.90, 0.955, margin=0.01)
    assert not worse.passed
    assert worse.numbers == {
        "candidate": 0.90,
        "production": 0.955,
        "margin": 0.01,
        "threshold": pytest.approx(0.945),
    }
    assert "0.9000 < 0.9550" in worse.detail


def test_quality_gate_passes_without_production() -> None:
    gate = quality_gate("f1_macro", 0.5, None, margin=0.0)
    assert gate.passed
    assert gate.numbers == {"candidate": 0.5}


def test_minimum_gate_is_optional() -> None:
    assert minimum_gate("f1_macro", 0.1, None).passed
    assert minimum_gate("f1_macro", 0.9, 0.8).passed
    low = minimum_gate("f1_macro", 0.7, 0.8)
    assert not low.passed
    assert low.numbers == {"candidate": 0.7, "minimum": 0.8}


def test_signature_gate_compares_names_and_types() -> None:
    prod = {"a": ("double", True), "b": ("double", True)}
    assert signature_gate(dict(prod), prod).passed
    assert signature_gate(prod, None).passed
    assert not signature_gate(None, prod).passed
    changed = signature_gate({"a": ("string", True), "c": ("double", True)}, prod)
    assert not changed.passed
    assert changed.numbers["missing"] == ["b"]
    assert changed.numbers["extra"] == ["c"]
    assert changed.numbers["type_changed"] == ["a"]
    assert "a double->string" in changed.detail


def test_force_makes_only_the_metric_gates_advisory() -> None:
    results = [
        GateResult(QUALITY, False),
        GateResult(MINIMUM, False),
        GateResult(SIGNATURE, False),
    ]
    assert [r.blocking for r in enforce(results, skip_quality=False)] == [True, True, True]
    assert [r.blocking for r in enforce(results, skip_quality=True)] == [False, False, True]


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("production", "Production"),
        ("STAGING", "Staging"),
        ("archived", "Archived"),
        ("none", "None"),
    ],
)
def test_stage_names_are_case_insensitive(text: str, stage: str) -> None:
    assert normalize_stage(text) == stage


def test_invalid_stage_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"invalid stage 'Prod'.*Production, Staging"):
        normalize_stage("Prod")


def test_project_gates_file_parses() -> None:
    config = load_gates(PROJECT_ROOT / "conf")
    assert config.metric == "f1_macro"
    assert config.aliases["Production"] == "production"
    assert config.aliases["Staging"] == "staging"


def test_gates_file_errors_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "gates.yaml").write_text("metric: f1_macro\nmargin: -1\n")
    with pytest.raises(ConfigError, match="margin"):
        load_gates(tmp_path)
    (tmp_path / "gates.yaml").write_text("aliases: {Prod: production}\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_gates(tmp_path)
    (tmp_path / "gates.yaml").write_text("min_metric: 0.9\n")
    assert load_gates(tmp_path) == GatesConfig(min_metric=0.9)


def test_audit_tags_round_trip() -> None:
    gates = [GateResult(QUALITY, True, {"candidate": 0.9}).to_dict()]
    entry = audit.AuditEntry(
        "promote", "Production", "2026-01-01T00:00:00+00:00", "ana", "why", "3", True, gates
    )
    tags = entry.to_tags()
    assert tags["lifecycle.previous_version"] == "3"
    assert tags["lifecycle.forced"] == "true"
    assert json.loads(tags["lifecycle.gates"])[0]["numbers"] == {"candidate": 0.9}
    assert audit.previous_version(tags) == "3"
    assert audit.previous_version({"lifecycle.previous_version": "none"}) is None
    assert audit.gates_from_tags(tags)[0]["name"] == QUALITY


def test_lock_key_is_stable_and_per_model() -> None:
    assert lock_key("iris") == lock_key("iris")
    assert lock_key("iris") != lock_key("wine")
    assert -(2**63) <= lock_key("iris") < 2**63


def test_file_lock_serialises_promotions_in_embedded_mode(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with promotion_lock(settings, "m", timeout=5):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(5)
        start = time.monotonic()
        with (
            pytest.raises(LockTimeout, match="another promotion of m"),
            promotion_lock(settings, "m", timeout=0.3),
        ):
            pass
        assert time.monotonic() - start >= 0.3
        # A different model is not blocked.
        with promotion_lock(settings, "other", timeout=0.3):
            pass
    finally:
        release.set()
        thread.join()
    with promotion_lock(settings, "m", timeout=0.3):
        pass

"""conf/alerts.yml: every rule is unit-tested with `promtool test rules`, firing and not firing.

promtool comes from Debian's `prometheus` package (.ci/run installs it). The tests in
conf/alerts_test.yml give each rule one evaluation where it fires and one where it does not;
this module runs them and checks that no rule is left out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict

import pytest
import yaml

from lifecycle.core.config import load_drift
from lifecycle.core.settings import PROJECT_ROOT
from tests.support.services import REQUIRE_ENV

CONF = PROJECT_ROOT / "conf"


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        message = "alert rule tests need promtool (apt-get install prometheus)"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def test_every_alert_rule_passes_its_promtool_tests() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", "alerts_test.yml"],
        cwd=CONF,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_rule_is_tested_firing_and_not_firing() -> None:
    rules = yaml.safe_load((CONF / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((CONF / "alerts_test.yml").read_text())
    cases: dict[str, set[str]] = defaultdict(set)
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            cases[case["alertname"]].add("fires" if case.get("exp_alerts") else "silent")
    missing = {a: {"fires", "silent"} - cases[a] for a in alerts if cases[a] != {"fires", "silent"}}
    assert not missing, f"alert rules without a firing and a silent promtool case: {missing}"
    assert set(cases) <= alerts, f"tests name unknown alerts: {set(cases) - alerts}"


def test_drift_alert_threshold_is_the_drift_share_of_conf_drift_yaml() -> None:
    # The report's verdict and the alert must agree on what "drift" means.
    rules = yaml.safe_load((CONF / "alerts.yml").read_text())
    (expr,) = [
        r["expr"]
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == "LifecycleDriftDetected"
    ]
    found = re.findall(r"lifecycle_drift_share\s*>=\s*([0-9.]+)", expr)
    assert len(found) == 1, f"no single `lifecycle_drift_share >= N` in {expr!r}"
    assert float(found[0]) == load_drift(CONF).drift_share

"""Gated promotion against the real tracking server on the real PostgreSQL.

Models are trained once per module and registered as fresh versions under a new name per
test, so each test owns its registry state and training time is paid once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import registry
from lifecycle.cli.up import bootstrap
from lifecycle.core import mlflow_gateway
from lifecycle.core.settings import PROJECT_ROOT, Settings
from registry.commands import models_command
from registry.lock import LockTimeout, promotion_lock
from tests.support.services import TrackingServer, free_port
from training.train import TrainRequest, TrainResult, train

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Trained:
    weak: TrainResult  # logistic regression with C=0.01
    strong: TrainResult  # the configured logistic regression
    poor: TrainResult  # a one-tree, depth-one forest
    wine: TrainResult  # a different dataset: another signature


@pytest.fixture(scope="module")
def trained(
    pg_tracking: TrackingServer, app_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    settings = Settings(
        tracking_uri=pg_tracking.uri,
        database_url=app_database_url,
        data_dir=tmp_path_factory.mktemp("registry-data"),
        conf_dir=PROJECT_ROOT / "conf",
        experiment_name="registry-tests",
    )
    out = Trained(
        weak=train(settings, TrainRequest(dataset="iris", params={"C": 0.01})),
        strong=train(settings, TrainRequest(dataset="iris")),
        poor=train(
            settings,
            TrainRequest(
                dataset="iris",
                estimator="random_forest",
                params={"n_estimators": 1, "max_depth": 1},
            ),
        ),
        wine=train(settings, TrainRequest(dataset="wine")),
    )
    # The scenario needs a real ordering, not three equal scores.
    assert out.weak.metrics["f1_macro"] < out.strong.metrics["f1_macro"] - 0.05
    assert out.poor.metrics["f1_macro"] < out.strong.metrics["f1_macro"] - 0.1
    return out


_MLFLOW_RUN_VARS = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


def _name() -> str:
    return f"reg-{uuid.uuid4().hex[:8]}"


def _register(settings: Settings, result: TrainResult, name: str) -> str:
    mlflow_gateway.connect(settings)
    return str(mlflow.register_model(result.model_uri, name).version)


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    # In-process training leaves MLflow's experiment in the environment; children choose theirs.
    inherited = {k: v for k, v in os.environ.items() if k not in _MLFLOW_RUN_VARS}
    return {
        **inherited,
        "LIFECYCLE_DATA_DIR": str(settings.resolved_data_dir()),
        "LIFECYCLE_CONF_DIR": str(settings.conf_dir),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri(),
        "LIFECYCLE_DATABASE_URL": str(settings.database_url),
        "LIFECYCLE_EXPERIMENT_NAME": settings.experiment_name,
        "LIFECYCLE_ACTOR": "registry-test",
        **extra,
    }


def _start(settings: Settings, args: Sequence[str], **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lifecycle", *args],
        env=_env(settings, **extra),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cli(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    proc = _start(settings, args, **extra)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _client(settings: Settings) -> MlflowClient:
    return mlflow_gateway.connect(settings)


def _stages(client: MlflowClient, name: str) -> dict[str, str]:
    return {v.version: str(v.current_stage) for v in mlflow_gateway.search_versions(client, name)}


def _alias(client: MlflowClient, name: str, alias: str) -> str | None:
    value = (client.get_registered_model(name).aliases or {}).get(alias)
    return str(value) if value is not None else None


def _tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, version).tags or {})


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines, proc.stdout
    assert lines[-1].startswith("error: "), proc.stderr
    return lines[-1]


def test_promote_refuse_force_and_rollback(settings: Settings, trained: Trained) -> None:
    name = _name()
    v1 = _register(settings, trained.weak, name)
    v2 = _register(settings, trained.strong, name)
    v3 = _register(settings, trained.poor, name)
    client = _client(settings)

    first = registry.promote(settings, name, v1, "production", reason="first")
    assert first.changed and first.previous_version is None
    assert _stages(client, name)[v1] == "Production"
    assert _alias(client, name, "production") == v1

    # A better version replaces it: v1 archived, alias moved, audit written.
    second = registry.promote(settings, name, v2, "Production", reason="better f1")
    assert _stages(client, name) == {v1: "Archived", v2: "Production", v3: "None"}
    assert _alias(client, name, "production") == v2
    tags = _tags(client, name, v2)
    assert tags["lifecycle.action"] == "promote"
    assert tags["lifecycle.previous_version"] == v1
    assert tags["lifecycle.reason"] == "better f1"
    assert tags["lifecycle.forced"] == "false"
    assert tags["lifecycle.promoted_by"] == (settings.actor or "unknown")
    assert datetime.fromisoformat(tags["lifecycle.promoted_at"]).tzinfo is not None
    gates = {g["name"]: g for g in json.loads(tags["lifecycle.gates"])}
    assert set(gates) == {"quality", "signature", "loads", "minimum"}
    assert gates["quality"]["passed"]
    assert gates["quality"]["numbers"]["candidate"] == pytest.approx(
        trained.strong.metrics["f1_macro"]
    )
    assert gates["quality"]["numbers"]["production"] == pytest.approx(
        trained.weak.metrics["f1_macro"]
    )
    assert [g.name for g in second.gates if not g.passed] == []

    # A worse version is refused by the CLI, with the numbers printed and a non-zero exit.
    refused = _cli(settings, "promote", name, v3, "--stage", "Production")
    assert refused.returncode != 0
    assert "quality" in refused.stdout and "FAIL" in refused.stdout
    assert f"{trained.poor.metrics['f1_macro']:.4f}" in refused.stdout
    assert f"{trained.strong.metrics['f1_macro']:.4f}" in refused.stdout
    line = _error_line(refused)
    assert name in line and "quality" in line
    assert _stages(client, name)[v2] == "Production"
    assert _alias(client, name, "production") == v2

    # --force promotes it anyway and says so in the audit tags.
    forced = _cli(settings, "promote", name, v3, "--stage", "Production", "--force")
    assert forced.returncode == 0, forced.stderr
    assert _stages(client, name) == {v1: "Archived", v2: "Archived", v3: "Production"}
    assert _alias(client, name, "production") == v3
    tags = _tags(client, name, v3)
    assert tags["lifecycle.forced"] == "true"
    assert tags["lifecycle.previous_version"] == v2
    assert tags["lifecycle.promoted_by"] == "registry-test"
    quality = next(g for g in json.loads(tags["lifecycle.gates"]) if g["name"] == "quality")
    assert not quality["passed"] and not quality["enforced"]

    # Rollback returns Production and the alias to v2, with its own audit entry.
    back = _cli(settings, "rollback", name)
    assert back.returncode == 0, back.stderr
    assert _stages(client, name) == {v1: "Archived", v2: "Production", v3: "Archived"}
    assert _alias(client, name, "production") == v2
    tags = _tags(client, name, v2)
    assert tags["lifecycle.action"] == "rollback"
    assert tags["lifecycle.previous_version"] == v3

    lines: list[str] = []
    models_command(settings, name, lines.append)
    listing = "\n".join(lines)
    row = next(r for r in listing.splitlines() if r.startswith(f"{name}  {v2} "))
    assert "Production" in row and "production" in row and "(rollback)" in row
    assert f"{trained.strong.metrics['f1_macro']:.4f}" in row
    assert trained.strong.run_id in row


def test_rollback_without_audit_tags_uses_latest_archived(
    settings: Settings, trained: Trained
) -> None:
    """Stage changes made outside Lifecycle are legitimate: rollback copes without tags."""
    name = _name()
    v1 = _register(settings, trained.strong, name)
    v2 = _register(settings, trained.strong, name)
    client = _client(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.transition_model_version_stage(name, v1, "Production")
        client.transition_model_version_stage(
            name, v2, "Production", archive_existing_versions=True
        )
    result = registry.rollback(settings, name)
    assert result.version == v1
    assert _stages(client, name) == {v1: "Production", v2: "Archived"}
    assert _alias(client, name, "production") == v1


def test_broken_or_mismatched_versions_are_refused_even_forced(
    settings: Settings, trained: Trained, pg_tracking: TrackingServer
) -> None:
    name = _name()
    v1 = _register(settings, trained.strong, name)
    client = _client(settings)
    registry.promote(settings, name, v1, "Production")

    # A wine model under the iris name: its inputs differ from what Production serves.
    wine = _register(settings, trained.wine, name)
    with pytest.raises(registry.PromotionRefused) as info:
        registry.promote(settings, name, wine, "Production", force=True)
    signature = next(g for g in info.value.results if g.name == "signature")
    assert not signature.passed and signature.enforced
    assert "sepal length (cm)" in signature.numbers["missing"]
    assert "alcohol" in signature.numbers["extra"]

    # A version whose model file is corrupt cannot load: refused, cleanly, even with --force.
    broken_run = train(settings, TrainRequest(dataset="iris", register=True, model_name=name))
    assert broken_run.version is not None
    model_id = broken_run.model_uri.rsplit("/", 1)[-1]
    (pkl,) = pg_tracking.artifacts.glob(f"*/models/{model_id}/artifacts/model.pkl")
    pkl.write_bytes(b"not a pickle")
    refused = _cli(
        settings, "promote", name, broken_run.version, "--stage", "Production", "--force"
    )
    assert refused.returncode != 0
    assert "loads" in refused.stdout and "FAIL" in refused.stdout
    assert "loads" in _error_line(refused)

    stages = _stages(client, name)
    assert stages[v1] == "Production"
    assert stages[wine] == "None" and stages[broken_run.version] == "None"
    assert _alias(client, name, "production") == v1
    assert "lifecycle.forced" not in _tags(client, name, broken_run.version)


def test_concurrent_promotions_leave_one_production_version(
    settings: Settings, trained: Trained
) -> None:
    name = _name()
    client = _client(settings)
    current = _register(settings, trained.strong, name)
    registry.promote(settings, name, current, "Production")
    for _ in range(2):
        a = _register(settings, trained.strong, name)
        b = _register(settings, trained.strong, name)
        procs = [_start(settings, ["promote", name, v, "--stage", "Production"]) for v in (a, b)]
        outs = [p.communicate(timeout=180) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs

        production = [v for v, s in _stages(client, name).items() if s == "Production"]
        assert len(production) == 1
        winner = production[0]
        assert winner in (a, b)
        assert _alias(client, name, "production") == winner
        # Serialised by the lock: the second promotion saw the first one's result.
        loser = b if winner == a else a
        assert _tags(client, name, loser)["lifecycle.previous_version"] == current
        assert _tags(client, name, winner)["lifecycle.previous_version"] == loser
        current = winner


def test_mlproject_main_ends_in_staging_with_alias(settings: Settings) -> None:
    name = _name()
    env = _env(settings)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "run",
            ".",
            "-e",
            "main",
            "--env-manager",
            "local",
            "--experiment-name",
            settings.experiment_name,
            "-P",
            f"model_name={name}",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    client = _client(settings)
    stages = _stages(client, name)
    assert list(stages.values()) == ["Staging"]
    (version,) = stages
    assert _alias(client, name, "staging") == version
    assert _alias(client, name, "production") is None
    assert _tags(client, name, version)["lifecycle.stage"] == "Staging"


def test_bad_input_is_one_line_without_traceback(settings: Settings, trained: Trained) -> None:
    name = _name()
    _register(settings, trained.strong, name)
    down = f"http://127.0.0.1:{free_port()}"
    cases = {
        "registered model nosuch-model not found": ["promote", "nosuch-model", "1"],
        f"model {name} has no version 99": ["promote", name, "99"],
        "invalid stage 'Prod'": ["promote", name, "1", "--stage", "Prod"],
        f"model {name} has no Production version": ["rollback", name],
    }
    procs = {msg: _start(settings, args) for msg, args in cases.items()}
    procs["unreachable"] = _start(settings, ["models"], MLFLOW_TRACKING_URI=down)
    for expected, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert done.returncode != 0, (expected, out, err)
        line = _error_line(done)
        assert expected in line, (expected, err)
        assert len([x for x in err.splitlines() if x.strip()]) == 1, err


def test_advisory_lock_blocks_a_second_promotion_of_the_same_model(settings: Settings) -> None:
    assert str(settings.database_url).startswith("postgresql")
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with promotion_lock(settings, "locked-model", timeout=5):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        with (
            pytest.raises(LockTimeout, match="another promotion of locked-model"),
            promotion_lock(settings, "locked-model", timeout=0.5),
        ):
            pass
        with promotion_lock(settings, "another-model", timeout=0.5):
            pass
    finally:
        release.set()
        thread.join()
    with promotion_lock(settings, "locked-model", timeout=0.5):
        pass


def test_up_bootstrap_promotes_the_newest_version(settings: Settings, trained: Trained) -> None:
    name = _name()
    _register(settings, trained.weak, name)
    newest = _register(settings, trained.strong, name)
    local = settings.model_copy(update={"model_name": name})
    lines: list[str] = []
    bootstrap(local, lines.append)
    client = _client(settings)
    assert _stages(client, name)[newest] == "Production"
    assert _alias(client, name, "production") == newest
    assert _tags(client, name, newest)["lifecycle.reason"] == "lifecycle up bootstrap"
    bootstrap(local, lines.append)
    assert "no bootstrap needed" in lines[-1]

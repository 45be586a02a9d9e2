"""The retrain DAG's training and promotion: `mlflow run` of the MLproject's `main` entry point
(train → register → gates → stage), the outcome recorded in the automatic promotion log.

The run is a subprocess, as a person would start it, so the candidate is trained and gated by
exactly the code and settings `mlflow run . -e main` uses; its output is this task's log.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities.model_registry import ModelVersion

from lifecycle.core import mlflow_gateway
from lifecycle.core.config import RetrainConfig
from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import PROJECT_ROOT, Settings
from lifecycle.core.store.promotions import AutomaticPromotion, PromotionLog
from registry.audit import gates_from_tags
from registry.commands import gates_table
from registry.gates import GateResult
from registry.promotion import check_gates

# What `mlflow run` logs once it has created the run.
_RUN_ID = re.compile(r"run with ID '([0-9a-f]{32})'")


class AutomaticPromotionRefused(LifecycleError):
    """The gates refused the retrained candidate: the served version stays."""

    status_code = 409


class RetrainFailed(LifecycleError):
    status_code = 500


def train_and_promote(
    settings: Settings,
    config: RetrainConfig,
    training_set: dict[str, Any],
    report_id: str | None,
    dag_run_id: str,
) -> dict[str, Any]:
    name = str(training_set.get("model_name") or settings.registered_model_name())
    stage = config.stage
    reason = f"retrain after drift report {report_id or 'none'} (Airflow run {dag_run_id})"
    command = mlflow_run_command(settings, training_set, name, stage, reason)
    print("$ " + shlex.join(command), flush=True)
    code, run_id = _run(command, _environment(settings))
    log = PromotionLog(settings.resolved_database_url())
    try:
        outcome = _outcome(settings, name, stage, code, run_id)
        entry = log.record(
            AutomaticPromotion(
                model_name=name,
                version=outcome.version,
                stage=stage,
                outcome=outcome.outcome,
                report_id=report_id,
                dag_run_id=dag_run_id,
                run_id=run_id,
                detail=outcome.detail,
            )
        )
    finally:
        log.dispose()
    print(f"recorded automatic promotion #{entry.id}: {outcome.outcome}")
    if outcome.outcome == "refused":
        raise AutomaticPromotionRefused(outcome.detail)
    if outcome.outcome == "failed":
        raise RetrainFailed(outcome.detail)
    return {
        "run_id": run_id,
        "version": outcome.version,
        "stage": stage,
        "outcome": "promoted",
        "model_name": name,
    }


def mlflow_run_command(
    settings: Settings, training_set: dict[str, Any], name: str, stage: str, reason: str
) -> list[str]:
    params = {
        "dataset": str(training_set["path"]),
        "target": str(training_set["target"]),
        # The candidate answers with the served version's labels, not the file's 0/1/2.
        "class_labels": json.dumps(training_set.get("class_labels") or {}),
        "model_name": name,
        "stage": stage,
        "reason": reason,
    }
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(PROJECT_ROOT),
        "-e",
        "main",
        "--env-manager",
        "local",
        "--experiment-name",
        settings.experiment_name,
    ]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return command


def _environment(settings: Settings) -> dict[str, str]:
    """This process's environment (LIFECYCLE_* included), with this interpreter's folder first
    on PATH: `--env-manager local` runs the entry point's `python` from PATH, and an Airflow
    task's PATH leads to Airflow's own virtualenv."""
    env = dict(os.environ)
    # The candidate gets a run of its own in the configured experiment, whatever run or
    # experiment this process was in (mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID, and
    # `mlflow run` refuses it beside --experiment-name).
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(key, None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MLFLOW_TRACKING_URI"] = settings.resolved_tracking_uri()
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(command: list[str], env: dict[str, str]) -> tuple[int, str | None]:
    """Run, echoing every line to this task's log; (exit code, MLflow run id if seen)."""
    run_id = None
    with subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if run_id is None and (match := _RUN_ID.search(line)):
                run_id = match.group(1)
        code = proc.wait()
    print(f"mlflow run exited with {code}", flush=True)
    return code, run_id


@dataclass(frozen=True)
class _Outcome:
    outcome: str  # promoted | refused | failed
    version: str | None
    detail: str


def _outcome(settings: Settings, name: str, stage: str, code: int, run_id: str | None) -> _Outcome:
    if run_id is None:
        return _Outcome("failed", None, f"mlflow run exited with {code} before creating a run")
    client = mlflow_gateway.connect(settings)
    version = _registered(client.search_model_versions(f"run_id = '{run_id}'"), name)
    if version is None:
        return _Outcome(
            "failed", None, f"run {run_id} registered no version of {name} (exit code {code})"
        )
    number = str(version.version)
    if code == 0 and version.current_stage == stage:
        print(f"{name} v{number} promoted to {stage} by run {run_id}")
        return _Outcome("promoted", number, f"{name} v{number} promoted to {stage}")
    gates = _gates(settings, name, version, stage)
    blocking = [g for g in gates if g.blocking]
    if gates:
        print(f"gates of {name} v{number} for {stage}:")
        print(gates_table(gates), flush=True)
    if blocking:
        summary = "; ".join(f"{g.name}: {g.detail}" for g in blocking)
        return _Outcome("refused", number, f"{name} v{number} refused by the gates: {summary}")
    return _Outcome(
        "failed",
        number,
        f"{name} v{number} (run {run_id}) not promoted to {stage}: exit code {code}, no gate "
        "refused (see the log above)",
    )


def _registered(versions: list[ModelVersion], name: str) -> ModelVersion | None:
    mine = [v for v in versions if v.name == name]
    return max(mine, key=lambda v: int(v.version)) if mine else None


def _gates(settings: Settings, name: str, version: ModelVersion, stage: str) -> list[GateResult]:
    """The gate results the version's audit tags record, else (a refused promotion writes no
    audit entry) the gates evaluated again now: same candidate, same Production, same rows."""
    recorded = gates_from_tags(version.tags or {})
    if recorded:
        return [GateResult(**gate) for gate in recorded]
    try:
        return check_gates(settings, name, version.version, stage).gates
    except LifecycleError as exc:
        print(f"gates not evaluated: {exc.message}")
        return []

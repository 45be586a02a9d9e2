"""Lifecycle's DAGs run by Airflow's own virtualenv from the tests: `dag_test.py` (describe, or
one `dag.test()` run) with the environment `lifecycle up` gives Airflow (pipelines.airflow_env).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from lifecycle.core.settings import PROJECT_ROOT, Settings
from pipelines.airflow_env import airflow_bin, airflow_env

SCRIPT = PROJECT_ROOT / "pipelines" / "airflow" / "dag_test.py"


class DagEnv:
    """An AIRFLOW_HOME migrated once; Airflow's environment from `settings` (as `up` builds
    it), with `lifecycle_env` (the `LIFECYCLE_*` variables the tasks read) on top."""

    def __init__(self, home: Path, settings: Settings, lifecycle_env: dict[str, str]) -> None:
        self.home = home
        self.settings = settings.model_copy(update={"airflow_home": home})
        self.airflow = airflow_bin(self.settings)
        self.python = str(self.airflow.parent / "python")
        self.env = airflow_env(self.settings, {**os.environ, **lifecycle_env}, sys.executable)
        # SQLite under this home, whatever database the stack's settings name.
        self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
        home.mkdir(parents=True, exist_ok=True)
        self.log = home / "dag-test.log"

    def migrate(self) -> None:
        self.airflow_command("db", "migrate")

    def airflow_command(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.airflow), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def script(self, *args: str, timeout: float = 900) -> tuple[dict[str, Any], str]:
        """`dag_test.py ARGS`: its JSON result and its output (Airflow's and the tasks' logs)."""
        out = self.home / "result.json"
        out.unlink(missing_ok=True)
        proc = subprocess.run(
            [self.python, str(SCRIPT), "--out", str(out), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = proc.stdout + proc.stderr
        with self.log.open("a") as log:
            log.write(f"\n===== dag_test.py {' '.join(args)} (exit {proc.returncode})\n{output}")
        assert proc.returncode == 0 and out.exists(), (
            f"dag_test.py {args} failed:\n{output[-6000:]}"
        )
        return json.loads(out.read_text()), output

    def describe(self) -> dict[str, Any]:
        return self.script("describe")[0]

    def test(self, dag_id: str, conf: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
        return self.script("test", dag_id, "--conf", json.dumps(conf or {}))

"""Running the `lifecycle` command as a user would: a subprocess with its own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lifecycle.core.settings import PROJECT_ROOT, Settings

BIN = Path(sys.executable).parent


def cli_env(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    """The environment a user would set for `settings`; the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if settings is not None:
        env["MLFLOW_TRACKING_URI"] = settings.resolved_tracking_uri()
        env["LIFECYCLE_DATA_DIR"] = str(settings.data_dir)
        env["LIFECYCLE_CONF_DIR"] = str(settings.conf_dir)
        env["LIFECYCLE_EXPERIMENT_NAME"] = settings.experiment_name
        if settings.database_url:
            env["LIFECYCLE_DATABASE_URL"] = settings.database_url
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 300, cwd: Path = PROJECT_ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A user error: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]

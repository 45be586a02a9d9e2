"""The environment and commands of the embedded Airflow: one place, used by `lifecycle up`, the
tests and (as the same variables) compose.yaml.

Airflow runs from its own virtualenv (settings.airflow_venv); its tasks run Lifecycle's code
with the project's interpreter (LIFECYCLE_PROJECT_PYTHON), never by importing across the two.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from lifecycle.core.errors import ConfigError
from lifecycle.core.settings import PROJECT_ROOT, Settings

DAGS_FOLDER = PROJECT_ROOT / "pipelines" / "dags"
MLFLOW_CONN_ID = "mlflow_default"
# The processes `airflow standalone` would start, minus the triggerer (no DAG defers).
SERVICES = ("api-server", "scheduler", "dag-processor")
HEALTH_PATH = "/api/v2/monitor/health"
ADMIN_USER = "admin"
# LocalExecutor forks this many workers up front (Airflow's default, 32, on a 2-core machine
# is memory for nothing): the DAGs run a handful of tasks at a time.
DEFAULT_PARALLELISM = "4"


def airflow_bin(settings: Settings) -> Path:
    """The `airflow` command of Airflow's virtualenv; ConfigError naming the setting when the
    virtualenv was never built."""
    command = settings.airflow_venv.expanduser() / "bin" / "airflow"
    if not command.exists():
        raise ConfigError(
            f"Airflow is not installed at {settings.airflow_venv} (LIFECYCLE_AIRFLOW_VENV): "
            "run `make airflow`, or start without it (`lifecycle up --no-airflow`)"
        )
    return command


def airflow_database_url(settings: Settings) -> str:
    """Airflow's metadata database: the setting, else a database beside a PostgreSQL
    database_url ('<name>_airflow', which `ensure_database` creates), else SQLite."""
    if settings.airflow_database_url:
        return settings.airflow_database_url
    if settings.database_url:
        url = make_url(settings.database_url)
        if url.get_backend_name() == "postgresql":
            # Airflow's own tables (and its alembic_version) must not share a database with
            # Lifecycle's and MLflow's.
            airflow = url.set(drivername="postgresql+psycopg2", database=f"{url.database}_airflow")
            return airflow.render_as_string(hide_password=False)
    return f"sqlite:///{settings.resolved_airflow_home() / 'airflow.db'}"


def ensure_database(url: str) -> None:
    """Create a PostgreSQL metadata database that does not exist yet (SQLite creates itself)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        return
    import psycopg2
    from psycopg2 import sql

    admin = parsed.set(drivername="postgresql", database="postgres")
    conn = psycopg2.connect(admin.render_as_string(hide_password=False))
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(parsed.database)))
    finally:
        conn.close()


def airflow_url(settings: Settings) -> str:
    return f"http://{settings.airflow_host}:{settings.airflow_port}"


def airflow_env(settings: Settings, base: dict[str, str], project_python: str) -> dict[str, str]:
    """`base` (the children's environment, LIFECYCLE_* included: the tasks read their settings
    from it) plus Airflow's configuration."""
    home = settings.resolved_airflow_home()
    url = airflow_url(settings)
    env = dict(base)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            # The DAG files share lifecycle_common.py; not every Airflow command puts the
            # DAGs folder on sys.path.
            "PYTHONPATH": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_database_url(settings),
            "AIRFLOW__API__HOST": settings.airflow_host,
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.airflow_log_port),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            f"AIRFLOW_CONN_{MLFLOW_CONN_ID.upper()}": settings.resolved_tracking_uri(),
            "LIFECYCLE_PROJECT_PYTHON": project_python,
            "PATH": os.pathsep.join(
                [str(settings.airflow_venv.expanduser() / "bin"), base.get("PATH", "")]
            ),
        }
    )
    # A value the user set wins over the embedded default.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", DEFAULT_PARALLELISM)
    return env


def passwords_file(env: dict[str, str]) -> Path:
    """Where Airflow's simple auth manager keeps its passwords: a file the user names with
    Airflow's own setting, else the one the API server generates in AIRFLOW_HOME on first
    start (and reuses after)."""
    configured = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if configured:
        return Path(configured)
    return Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"


def admin_password(env: dict[str, str]) -> str:
    """The admin's password, once the API server has started (it writes a missing one)."""
    path = passwords_file(env)
    try:
        passwords = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read Airflow's passwords file {path}: {exc}") from exc
    password = passwords.get(ADMIN_USER) if isinstance(passwords, dict) else None
    if not isinstance(password, str):
        raise ConfigError(f"Airflow's passwords file {path} has no '{ADMIN_USER}' entry")
    return password

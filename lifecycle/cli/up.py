"""`lifecycle up`: the whole lifecycle on one machine, with no servers to install.

It starts the embedded MLflow server (SQLite + local artifacts under the data directory),
bootstraps a first model when the registry holds none, starts the API, the worker, the UI
and Airflow with the pipelines' DAGs (unless --no-airflow), prints every URL and keeps the
children running until Ctrl-C or SIGTERM, then stops them all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from lifecycle.cli.airflow import EmbeddedAirflow
from lifecycle.cli.ports import check_ports_free, planned_ports
from lifecycle.cli.startup import wait_http
from lifecycle.cli.supervisor import Supervisor
from lifecycle.core.errors import GateFailed, NotFound
from lifecycle.core.settings import Settings

Echo = Callable[[str], None]


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["LIFECYCLE_DATA_DIR"] = str(settings.resolved_data_dir())
    env["LIFECYCLE_CONF_DIR"] = str(settings.conf_dir.resolve())
    env["MLFLOW_TRACKING_URI"] = settings.resolved_tracking_uri()
    # No load balancer sits in front of the embedded API, so a drain grace would only make
    # Ctrl-C wait; a value the user set is kept.
    env.setdefault("LIFECYCLE_SHUTDOWN_GRACE_SECONDS", "0")
    return env


def bootstrap(settings: Settings, echo: Echo) -> bool:
    """Make sure the configured model has a Production version: train and promote one when
    the registry is empty, promote the newest version when none is in Production. True when
    a Production version exists afterwards."""
    # Imported here: MLflow takes seconds to import, and `up` checks its ports before that.
    from lifecycle.core import mlflow_gateway
    from training.train import TrainRequest, train

    client = mlflow_gateway.connect(settings)
    name = settings.registered_model_name()
    try:
        versions = mlflow_gateway.search_versions(client, name)
    except NotFound:
        versions = []
    if any(v.current_stage == "Production" for v in versions):
        echo(f"registry: {name} has a Production version; no bootstrap needed")
        return True
    if versions:
        version = str(versions[-1].version)
        echo(f"registry: {name} has no Production version; promoting the newest, v{version}")
    else:
        echo(f"registry: {name} is empty; training a first model on '{settings.dataset}'")
        result = train(settings, TrainRequest(dataset=settings.dataset, register=True))
        echo(f"registry: registered {name} v{result.version} (run {result.run_id})")
        version = str(result.version)
    return _bootstrap_promote(settings, name, version, echo)


def _bootstrap_promote(settings: Settings, name: str, version: str, echo: Echo) -> bool:
    import registry

    try:
        registry.promote(settings, name, version, "Production", reason="lifecycle up bootstrap")
    except GateFailed as exc:
        # `up` still starts: the registry and UI are where the user fixes this.
        echo(f"registry: {exc.message}")
        return False
    echo(f"registry: {name} v{version} promoted to Production")
    return True


def up(settings: Settings, echo: Echo, *, airflow: bool = True) -> int:
    # Before anything starts: a second `up` would otherwise see the first one's servers
    # answer its health checks and report success before failing.
    check_ports_free(planned_ports(settings, airflow=airflow))
    env = child_env(settings)
    # A missing Airflow virtualenv fails here, before anything needs stopping.
    pipelines = EmbeddedAirflow(settings, env) if airflow else None
    data_dir = settings.resolved_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    supervisor = Supervisor(logs)
    supervisor.install_signal_handlers()
    uri = settings.resolved_tracking_uri()
    try:
        if settings.tracking_uri is None:
            supervisor.start("mlflow", [sys.executable, "-m", "lifecycle", "tracking"], env)
            echo(f"starting MLflow at {uri} (logs: {logs})")
        if pipelines is not None:
            # While MLflow boots; a database Airflow cannot use stops `up` before training.
            pipelines.migrate(logs)
        if settings.tracking_uri is None:
            wait_http(supervisor, f"{uri}/health")
        serving = bootstrap(settings, echo)
        supervisor.start("api", [sys.executable, "-m", "lifecycle", "serve"], env)
        # The same command as production; with no broker_url it uses the embedded transport.
        supervisor.start("worker", [sys.executable, "-m", "lifecycle", "worker"], env)
        supervisor.start("ui", [sys.executable, "-m", "lifecycle", "ui"], env)
        if pipelines is not None:
            # Once the API is starting (the DAGs' first runs call it), while the UI boots;
            # its DAGs schedule the drift reports.
            echo(f"starting Airflow at {pipelines.url} (logs: {logs})")
            pipelines.start(supervisor)
        # Ready means a model is loaded, so the URLs printed below answer predictions at
        # once; without a Production version the API can only be live.
        api = settings.resolved_api_url()
        wait_http(supervisor, f"{api}/ready" if serving else f"{api}/health")
        ui = f"http://{settings.ui_host}:{settings.ui_port}"
        wait_http(supervisor, f"{ui}/_stcore/health")
        login = pipelines.wait_ready(supervisor) if pipelines is not None else None
        echo("")
        echo("Lifecycle is up:")
        echo(f"  Lifecycle UI             {ui}")
        echo(f"  MLflow UI and registry   {uri}")
        echo(f"  scoring API              {settings.resolved_api_url()}  (docs: /docs)")
        echo(f"  async worker             broker {_safe_url(settings.resolved_broker_url())}")
        schedule = (
            "drift_check DAG, hourly"
            if login is not None
            else "no schedule without Airflow: `lifecycle drift` runs one"
        )
        echo(
            f"  drift reports            {api}/reports  ({schedule}; newest: /reports/latest, "
            f"its HTML: /reports/{{id}}.html; MLflow experiment "
            f"'{settings.monitoring_experiment}')"
        )
        if login is not None:
            echo(
                f"  Airflow (pipelines)      {login.url}  "
                f"(login {login.username} / {login.password})"
            )
        if settings.worker_metrics_port:
            metrics = f"http://{settings.worker_metrics_host}:{settings.worker_metrics_port}"
            echo(f"  worker metrics           {metrics}/metrics")
        echo(f"  data directory           {data_dir}")
        echo("Press Ctrl-C to stop.")
        dead = supervisor.wait()
        if dead is not None:
            echo(f"error: {dead.name} exited with code {dead.process.returncode}; see {dead.log}")
            return 1
        echo("stopping...")
        return 0
    except KeyboardInterrupt:
        echo("stopping...")
        return 130
    finally:
        supervisor.stop_all()


def _safe_url(url: str) -> str:
    """A broker URL fit to print: the password replaced."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))

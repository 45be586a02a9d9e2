"""`lifecycle up`: the whole lifecycle on one machine, with no servers to install.

It starts the embedded MLflow server (SQLite + local artifacts under the data directory),
bootstraps a first model when the registry holds none, prints every URL and keeps the
children running until Ctrl-C or SIGTERM, then stops them all.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from lifecycle import mlflow_gateway
from lifecycle.errors import GateFailed, NotFound, TrackingUnavailable
from lifecycle.settings import Settings
from lifecycle.supervisor import Supervisor

Echo = Callable[[str], None]


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["LIFECYCLE_DATA_DIR"] = str(settings.resolved_data_dir())
    env["LIFECYCLE_CONF_DIR"] = str(settings.conf_dir.resolve())
    env["MLFLOW_TRACKING_URI"] = settings.resolved_tracking_uri()
    return env


def bootstrap(settings: Settings, echo: Echo) -> None:
    """Make sure the configured model has a Production version: train and promote one when
    the registry is empty, promote the newest version when none is in Production."""
    from training.train import TrainRequest, train

    client = mlflow_gateway.connect(settings)
    name = settings.registered_model_name()
    try:
        versions = mlflow_gateway.search_versions(client, name)
    except NotFound:
        versions = []
    if any(v.current_stage == "Production" for v in versions):
        echo(f"registry: {name} has a Production version; no bootstrap needed")
        return
    if versions:
        version = str(versions[-1].version)
        echo(f"registry: {name} has no Production version; promoting the newest, v{version}")
    else:
        echo(f"registry: {name} is empty; training a first model on '{settings.dataset}'")
        result = train(settings, TrainRequest(dataset=settings.dataset, register=True))
        echo(f"registry: registered {name} v{result.version} (run {result.run_id})")
        version = str(result.version)
    _bootstrap_promote(settings, name, version, echo)


def _bootstrap_promote(settings: Settings, name: str, version: str, echo: Echo) -> None:
    import registry

    try:
        registry.promote(settings, name, version, "Production", reason="lifecycle up bootstrap")
    except GateFailed as exc:
        # `up` still starts: the registry and UI are where the user fixes this.
        echo(f"registry: {exc.message}")
        return
    echo(f"registry: {name} v{version} promoted to Production")


def up(settings: Settings, echo: Echo) -> int:
    data_dir = settings.resolved_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(data_dir / "logs")
    supervisor.install_signal_handlers()
    env = child_env(settings)
    uri = settings.resolved_tracking_uri()
    try:
        if settings.tracking_uri is None:
            supervisor.start("mlflow", [sys.executable, "-m", "lifecycle", "tracking"], env)
            echo(f"starting MLflow at {uri} (logs: {data_dir / 'logs'})")
            _wait_ready(settings, supervisor)
        bootstrap(settings, echo)
        supervisor.start("api", [sys.executable, "-m", "lifecycle", "serve"], env)
        # The same command as production; with no broker_url it uses the embedded transport.
        supervisor.start("worker", [sys.executable, "-m", "lifecycle", "worker"], env)
        echo("")
        echo("Lifecycle is up:")
        echo(f"  MLflow UI and registry   {uri}")
        echo(f"  scoring API              {settings.resolved_api_url()}  (docs: /docs)")
        echo(f"  async worker             broker {_safe_url(settings.resolved_broker_url())}")
        echo(f"  data directory           {data_dir}")
        echo("Press Ctrl-C to stop.")
        dead = supervisor.wait()
        if dead is not None:
            echo(f"error: {dead.name} exited with code {dead.process.returncode}; see {dead.log}")
            return 1
        echo("stopping...")
        return 0
    finally:
        supervisor.stop_all()


def _wait_ready(settings: Settings, supervisor: Supervisor, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    uri = settings.resolved_tracking_uri()
    while True:
        dead = supervisor.first_exited()
        if dead is not None:
            raise TrackingUnavailable(
                f"{dead.name} exited with code {dead.process.returncode}; see {dead.log}"
            )
        if supervisor.stopping.is_set():
            raise KeyboardInterrupt
        try:
            mlflow_gateway.check_reachable(uri, 1.0)
            return
        except TrackingUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _safe_url(url: str) -> str:
    """A broker URL fit to print: the password replaced."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))

"""What the UI reads from MLflow over HTTP: versions with their audit tags, runs, confusion
matrices and training rows. Through `registry.listing`, `registry.audit`,
`reports.reference` and the kernel's gateway, so the UI words nothing its own way.

Every MLflow failure becomes a `UiError` naming the tracking server.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lifecycle.core import mlflow_gateway
from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import Settings
from registry import audit
from registry.listing import list_versions
from reports.reference import training_rows
from ui.client import UiError

CONFUSION_MATRIX = "confusion_matrix.png"
T = TypeVar("T")


@dataclass(frozen=True)
class VersionView:
    """One registered version as the Registry page lists it."""

    version: str
    stage: str
    aliases: tuple[str, ...]
    run_id: str | None
    created: str
    metrics: dict[str, float]
    audit: dict[str, str] = field(default_factory=dict)  # the lifecycle.* tags, unprefixed
    gates: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RunView:
    run_id: str
    name: str | None
    metrics: dict[str, float]
    params: dict[str, str]


class MlflowReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.uri = settings.resolved_tracking_uri()

    @contextmanager
    def _mlflow(self, what: str) -> Iterator[None]:
        try:
            yield
        except UiError:
            raise
        except LifecycleError as exc:
            raise UiError(f"MLflow at {self.uri}: {exc}") from exc
        except (MlflowException, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise UiError(f"MLflow at {self.uri} could not {what} ({first})") from exc

    def _call(self, what: str, fn: Callable[[MlflowClient], T]) -> T:
        with self._mlflow(what):
            return fn(mlflow_gateway.connect(self.settings))

    def versions(self, name: str) -> list[VersionView]:
        """Every version of `name`, oldest first, with the audit of its last registry action."""
        with self._mlflow(f"list the versions of {name}"):
            rows = list_versions(self.settings, name)
            client = mlflow_gateway.connect(self.settings)
            views = []
            for row in rows:
                tags = client.get_model_version(name, row.version).tags or {}
                views.append(
                    VersionView(
                        version=row.version,
                        stage=row.stage,
                        aliases=row.aliases,
                        run_id=row.run_id,
                        created=row.created.isoformat(timespec="seconds"),
                        metrics=dict(row.metrics),
                        audit={
                            k.removeprefix(audit.PREFIX): v
                            for k, v in tags.items()
                            if k.startswith(audit.PREFIX) and k != audit.GATES
                        },
                        gates=audit.gates_from_tags(tags),
                    )
                )
            return views

    def run(self, run_id: str) -> RunView:
        def read(client: MlflowClient) -> RunView:
            run = mlflow_gateway.get_run(client, run_id)
            return RunView(
                run_id=run_id,
                name=run.info.run_name,
                metrics={k: float(v) for k, v in run.data.metrics.items()},
                params=dict(run.data.params),
            )

        return self._call(f"read run {run_id}", read)

    def confusion_matrix(self, run_id: str) -> bytes | None:
        """The PNG training logged for the run; None when it logged none."""

        def read(client: MlflowClient) -> bytes | None:
            names = {a.path for a in client.list_artifacts(run_id)}
            if CONFUSION_MATRIX not in names:
                return None
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(run_id, CONFUSION_MATRIX, tmp)
                return Path(path).read_bytes()

        return self._call(f"read the confusion matrix of run {run_id}", read)

    def training_rows(self, run_id: str) -> pd.DataFrame:
        """The rows the run trained on (`reports.reference.training_rows`)."""

        def read(_: MlflowClient) -> pd.DataFrame:
            # connect() pointed mlflow's fluent API, which training_rows uses, at this server.
            return training_rows(run_id)

        return self._call(f"read the training rows of run {run_id}", read)

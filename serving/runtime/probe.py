"""Resolving a target to a version: one registry call per poll, through MLflow's public client.

The holder depends on the `RegistryProbe` protocol only, so a test or another registry can
stand in. MLflow's client retries for minutes by default; a poller must instead fail fast,
keep serving and try again on its next tick, which `fail_fast_http` arranges through MLflow's
documented HTTP settings.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Protocol

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient

from lifecycle.core.errors import LifecycleError
from serving.runtime.target import ModelTarget, VersionRef

# How MLflow's REST API says "no such model, version or alias".
_ABSENT = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


class RegistryUnavailable(LifecycleError):
    status_code = 503


class RegistryProbe(Protocol):
    def resolve(self, target: ModelTarget) -> VersionRef | None:
        """The version the target points at now; None when it points at nothing."""
        ...


def fail_fast_http(timeout: float, *, keep_set: bool = False) -> None:
    """No retries and a short timeout for every MLflow request of this process.

    Called once by the wiring of a serving process (`serving.wiring.Runtime`, for an API or
    Celery worker): MLflow reads these variables on every request, and a serving process
    makes no other MLflow calls than resolving and downloading its model. A failed download
    is a failed swap, retried with the holder's back-off. The UI calls it with `keep_set`:
    there a value the operator set wins.
    """
    values = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout))),
    }
    for name, value in values.items():
        if keep_set:
            os.environ.setdefault(name, value)
        else:
            os.environ[name] = value


class MlflowRegistryProbe:
    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def resolve(self, target: ModelTarget) -> VersionRef | None:
        try:
            if target.alias:
                return ref(self._client.get_model_version_by_alias(target.name, target.alias))
            if target.version:
                return ref(self._client.get_model_version(target.name, target.version))
            with warnings.catch_warnings():
                # Stages are deprecated in MLflow but are what stage targets follow.
                warnings.simplefilter("ignore", FutureWarning)
                found = self._client.get_latest_versions(target.name, stages=[target.stage or ""])
        except RestException as exc:  # the registry answered, with an error
            if exc.error_code in _ABSENT:
                return None
            raise RegistryUnavailable(f"registry error: {_first_line(exc.message)}") from exc
        except Exception as exc:  # any transport failure means "unreachable" to a poller
            raise RegistryUnavailable(f"registry unreachable: {root_cause(exc)}") from exc
        refs = [ref(mv) for mv in found]
        return max(refs, key=lambda r: int(r.version)) if refs else None


def ref(mv: ModelVersion) -> VersionRef:
    return VersionRef(
        name=str(mv.name),
        version=str(mv.version),
        run_id=mv.run_id or None,
        stage=mv.current_stage or None,
        aliases=tuple(mv.aliases or ()),
        status=str(mv.status or "READY"),
    )


def root_cause(exc: BaseException) -> str:
    """The innermost error of a chain, named: MLflow's own message is a long URL whose cause
    (refused, timed out, name not known) would otherwise be cut off."""
    root = exc
    seen = {id(root)}
    while (inner := root.__cause__ or root.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        root = inner
    return f"{type(root).__name__}: {_first_line(str(root))}".rstrip(": ")


def _first_line(text: str) -> str:
    return text.splitlines()[0][:300] if text else ""

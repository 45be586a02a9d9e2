"""The serving runtime: which version to serve, how it is resolved, loaded, held and followed.

`target` names what to serve, `probe` asks the registry what that is now, `loader` loads and
smoke-tests a version, `holder` keeps the current snapshot and swaps it, `reconciler` runs the
holder's reconcile on a schedule or on demand.
"""

from serving.runtime.holder import ModelHolder, ModelUnavailable, Outcome, SwapObserver
from serving.runtime.loader import LoadedModel, load_version
from serving.runtime.probe import MlflowRegistryProbe, RegistryProbe, RegistryUnavailable
from serving.runtime.reconciler import Reconciler
from serving.runtime.target import ModelTarget, VersionRef

__all__ = [
    "LoadedModel",
    "MlflowRegistryProbe",
    "ModelHolder",
    "ModelTarget",
    "ModelUnavailable",
    "Outcome",
    "Reconciler",
    "RegistryProbe",
    "RegistryUnavailable",
    "SwapObserver",
    "VersionRef",
    "load_version",
]

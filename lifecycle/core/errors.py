"""Domain errors: each carries the one line a user sees and the HTTP status it maps to."""

from __future__ import annotations


class LifecycleError(Exception):
    """An expected failure with a message fit for a user: no traceback is shown for it."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(LifecycleError):
    """Configuration or input data is unusable."""


class DataError(LifecycleError):
    """A dataset cannot be used for training or scoring."""


class TrackingUnavailable(LifecycleError):
    """The MLflow tracking server cannot be reached."""

    status_code = 503


class NotFound(LifecycleError):
    """A registered model, version or run does not exist."""

    status_code = 404


class GateFailed(LifecycleError):
    """A promotion was refused by one or more gates."""

    status_code = 409

"""What a report refuses: one line for the CLI, a 4xx for the API, a failed task's reason."""

from __future__ import annotations

from lifecycle.core.errors import LifecycleError


class ReportError(LifecycleError):
    """The window or the version cannot give a report (no predictions, too few, no training
    rows); says which, in one line."""

    status_code = 422

"""Query parameters shared by the read routes (history, reports): one declaration each, so a
name, a bound or a pattern means the same on every route.

Names and labels reach the database as parameters: control characters (a NUL the driver
refuses) are a 422 here, not a failed query. The lengths are the prediction store's columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query

from serving.api.models import PRINTABLE_PATTERN

CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"


def model_name(description: str) -> Any:
    return Query(max_length=255, pattern=PRINTABLE_PATTERN, description=description)


def model_version(description: str) -> Any:
    return Query(max_length=64, pattern=PRINTABLE_PATTERN, description=description)


ServedModelQuery = Annotated[
    str | None, model_name("Registered model name; absent: the served model's.")
]
AnyModelQuery = Annotated[str | None, model_name("Registered model name; absent: every model.")]
VersionQuery = Annotated[str | None, model_version("One model version.")]
LabelQuery = Annotated[
    str | None,
    Query(max_length=255, pattern=PRINTABLE_PATTERN, description="One predicted class label."),
]
SinceQuery = Annotated[
    datetime | None,
    Query(description="ISO 8601 time, inclusive (UTC when it names no zone)."),
]
UntilQuery = Annotated[
    datetime | None,
    Query(description="ISO 8601 time, exclusive (UTC when it names no zone)."),
]
BeforeQuery = Annotated[
    str | None,
    Query(
        max_length=4096,
        pattern=CURSOR_PATTERN,
        description="The `next` of the previous page: rows older than its last row.",
    ),
]

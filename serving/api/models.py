"""The fixed-shape request bodies and answers: each type both validates and documents.

FastAPI builds the OpenAPI document from these same types, so the schema cannot promise what
the validator refuses. `/predict` and `/invocations` are not here: their rows take the served
model's shape, which changes with the model, so `serving.validation` parses them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from serving.batch_files import FORMATS

# Request ids double as task ids, so one rule serves the X-Request-Id header and /tasks/{id}.
TASK_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


def _any_case(suffix: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in suffix)


# An absolute path whose suffix `batch_files.file_format` reads as CSV or Parquet (in any
# case, as it does). The name needs a character before the suffix: pathlib gives "/d/.csv" no
# suffix at all. Control characters are refused: no real file name has them, and a NUL would
# only fail later, in the worker.
BATCH_PATH_PATTERN = (
    r"^/([^\x00-\x1f\x7f]*/)?[^\x00-\x1f\x7f/]+\.("
    + "|".join(_any_case(suffix.lstrip(".")) for suffix in FORMATS)
    + ")$"
)


def _worded(message: str) -> WrapValidator:
    """Any refusal of the wrapped type, said as `message` instead of pydantic's wording (a
    regex, or one error per union member); the JSON schema stays the wrapped type's."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("invalid", message) from None

    return WrapValidator(check)


BatchPath = Annotated[
    str,
    Field(pattern=BATCH_PATH_PATTERN, max_length=4096),
    _worded(f"expected an absolute path to a CSV or Parquet file ({', '.join(FORMATS)})"),
]


class _Body(BaseModel):
    # An unknown field is a 422 that names it, not silently dropped.
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong, in one line.")


class FeedbackRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"request_id": "0f6c2a9e", "label": "setosa"}]}
    )

    request_id: StrictStr = Field(
        min_length=1, max_length=200, description="The request id of the prediction."
    )
    # Strict: JSON true/false is not a class, and "1" stays a string until it is matched.
    label: Annotated[
        StrictStr | StrictInt | StrictFloat,
        _worded("expected a class label (a string) or a class value (a number)"),
    ] = Field(
        description="The true class, as its label ('setosa') or its raw value (0); it must be "
        "a class of the served model."
    )


class BatchPathRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"path": "/data/iris.csv"}]})

    path: BatchPath = Field(description="Absolute path of a CSV or Parquet file the worker reads.")
    output_path: BatchPath | None = Field(
        None,
        description="Absolute path of the scored CSV or Parquet file; absent or null: "
        "<batch_dir>/out/<task_id>.scored.<format>.",
    )


class ModelRef(BaseModel):
    name: str
    version: str
    stage: str | None
    alias: str | None
    run_id: str | None


class Following(BaseModel):
    """How the server follows the registry (`ModelHolder.status`)."""

    target: str
    registry: Literal["ok", "degraded"]
    registry_error: str | None
    last_check: datetime | None
    last_error: str | None
    failed_version: str | None
    stale: bool = Field(
        False, description="The served version is not the one the target points at now."
    )
    target_version: str | None = Field(
        None, description="The version the target pointed at on the last registry answer."
    )
    # /ready only: the process and its prediction store.
    startup_error: str | None = Field(
        None, description="Why the process started without a model (start-up timeout)."
    )
    draining: bool = Field(False, description="SIGTERM received: stopping after a grace period.")
    store: Literal["ok", "spooling", "degraded"] | None = Field(
        None,
        description="Prediction store: ok, spooling (database down or replaying) or degraded "
        "(predictions are dropped, and counted, when the database cannot take them).",
    )
    store_error: str | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "not ready"]
    model: ModelRef | None
    details: Following


class FeatureInfo(BaseModel):
    name: str
    kind: Literal["numeric", "categorical"]


class ModelInfo(ModelRef):
    flavor: str
    scoring_path: str
    loaded_at: datetime
    features: list[FeatureInfo]
    target: str
    # Strict members keep each class's JSON type: 1 stays 1, true stays true.
    classes: list[StrictBool | StrictInt | StrictFloat | StrictStr]
    class_labels: list[str]
    following: Following


class FeedbackAnswer(BaseModel):
    request_id: str
    label: str = Field(description="The class label the feedback was recorded as.")
    status: Literal["recorded"]


class TaskAccepted(BaseModel):
    task_id: str
    request_id: str = Field(description="The same as task_id: predictions are stored under it.")
    kind: Literal["predict", "batch"]
    status: Literal["pending"]
    status_url: str


TaskState = Literal["pending", "started", "success", "failure"]


class TaskStatus(BaseModel):
    task_id: str
    status: TaskState
    state: str = Field(description="Celery's own state name.")
    result: dict[str, Any] | None = Field(None, description="Only when status is success.")
    error: str | None = Field(None, description="Only when status is failure.")
    retrying: str | None = Field(None, description="Why the task is being retried, if it is.")


class ReloadAnswer(BaseModel):
    outcome: Literal[
        "loaded", "unchanged", "pending", "failed", "skipped", "empty", "degraded", "timeout"
    ]
    detail: str | None
    model: ModelRef | None


class WebhookAnswer(BaseModel):
    status: Literal["accepted", "ignored"]

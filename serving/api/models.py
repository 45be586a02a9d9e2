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
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    field_serializer,
)
from pydantic_core import PydanticCustomError

from lifecycle.core.config import Stage
from registry.stages import GATED, PRODUCTION
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


class TaskProgress(BaseModel):
    rows: int = Field(description="Rows scored, stored and written so far.")


class TaskStatus(BaseModel):
    task_id: str
    status: TaskState
    state: str = Field(description="Celery's own state name.")
    result: dict[str, Any] | None = Field(None, description="Only when status is success.")
    error: str | None = Field(None, description="Only when status is failure.")
    retrying: str | None = Field(None, description="Why the task is being retried, if it is.")
    progress: TaskProgress | None = Field(
        None, description="Only while a batch file task runs: how far it has got."
    )


class ReloadAnswer(BaseModel):
    outcome: Literal[
        "loaded", "unchanged", "pending", "failed", "skipped", "empty", "degraded", "timeout"
    ]
    detail: str | None
    model: ModelRef | None


class WebhookAnswer(BaseModel):
    status: Literal["accepted", "ignored"]


# Report ids, model names and versions reach the database as parameters: control characters
# (a NUL the driver refuses) are a 422 here, not a failed query.
REPORT_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ModelName = Annotated[StrictStr, Field(min_length=1, max_length=255, pattern=PRINTABLE_PATTERN)]
VersionName = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=PRINTABLE_PATTERN)]


class ReportFeature(BaseModel):
    """One feature's line of a drift report."""

    feature: str
    kind: str
    test: str = Field(description="Evidently's drift test for this feature.")
    score: float
    threshold: float
    drifted: bool


class Report(BaseModel):
    """A drift/quality report as the index keeps it (`ReportEntry.to_json`)."""

    id: str
    created_at: datetime
    model_name: str
    model_version: str = Field(description="The version the window was compared with.")
    window: dict[str, Any] = Field(description="What was asked and what the window held.")
    rows: int
    sampled_rows: int
    reference_rows: int
    labelled_rows: int
    drift_share: float
    drifted_features: list[str]
    verdict: Literal["drift", "no_drift"]
    features: list[ReportFeature]
    quality: dict[str, Any] | None = Field(
        None, description="Per version: live figures from feedback and the training run's."
    )
    run_id: str | None = Field(None, description="The MLflow run holding the full report.")
    artifacts: dict[str, str] = Field(description="Artifact name → MLflow artifact URI.")

    @field_serializer("created_at")
    def _iso(self, value: datetime) -> str:
        # As `ReportEntry.to_json` writes it (+00:00, not Z): the API, the CLI's --json and the
        # task result spell one report the same way.
        return value.isoformat()


class ReportList(BaseModel):
    reports: list[Report] = Field(description="Newest first.")


def _whole_float_as_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON Schema's integer includes 300.0; a string or a bool stays refused.
_integral = BeforeValidator(_whole_float_as_int)


# What `reports.window.parse_since` reads, as the document can say it: a bounded duration (so
# "now minus it" is a date) or a date-time. The route parses it and answers 422 naming `since`.
SINCE_DURATION_PATTERN = r"^\s*\d{1,5}(\.\d{1,3})?\s*[smhdw]\s*$"
_since_schema = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": SINCE_DURATION_PATTERN},
            {"type": "string", "format": "date-time"},
        ]
    }
)


class ReportTaskRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "iris-classifier", "since": "2h"}]}
    )

    model: ModelName | None = Field(None, description="Registered model; null: the served one.")
    version: VersionName | None = Field(
        None, description="One version's predictions; null: every version in the window."
    )
    # Bounded so the window's LIMIT stays a number the database takes.
    last: Annotated[StrictInt, Field(ge=1, le=1_000_000_000), _integral] | None = Field(
        None, description="The last N predictions; null: LIFECYCLE_REPORT_LAST."
    )
    since: Annotated[StrictStr, _since_schema] | None = Field(
        None,
        description="A duration back from now (90s, 30m, 2h, 7d, 1w) or an ISO 8601 time "
        "(UTC when it names no zone).",
    )


class ReportAccepted(BaseModel):
    task_id: str
    kind: Literal["report"]
    status: Literal["pending"]
    status_url: str


# -- registry: gated promotion and rollback (routes_registry) ------------------------------

# Any letter case, as the CLI takes it; the route receives the stage's own spelling.
STAGE_PATTERN = "^(" + "|".join(_any_case(stage) for stage in GATED) + ")$"
_REASON_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def _gated_stage(value: Any) -> Stage:
    if isinstance(value, str):
        for stage in GATED:
            if value.lower() == stage.lower():
                return stage
    # Worded as the CLI words it. Only short printable text is echoed: anything else (a lone
    # surrogate) may be text no JSON answer can carry.
    shown = f" '{value}'" if isinstance(value, str) and _echoable(value) else ""
    raise PydanticCustomError(
        "invalid_stage",
        "invalid stage{shown}; expected one of {stages}",
        {"shown": shown, "stages": ", ".join(GATED)},
    )


def _echoable(text: str) -> bool:
    return len(text) <= 40 and text.isprintable() and text.isascii()


GatedStage = Annotated[
    str,
    PlainValidator(_gated_stage),
    WithJsonSchema({"type": "string", "pattern": STAGE_PATTERN, "default": PRODUCTION}),
]
Reason = Annotated[
    StrictStr,
    Field(max_length=1000, pattern=_REASON_PATTERN),
    _worded("expected text of at most 1000 characters, without control characters"),
]


class GateCheckRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "iris-classifier", "version": "2"}]}
    )

    name: ModelName = Field(description="Registered model.")
    version: VersionName = Field(description="The candidate version.")
    stage: GatedStage = Field(PRODUCTION, description="Production or Staging (any case).")


class PromoteRequest(GateCheckRequest):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "iris-classifier", "version": "2", "reason": "retrained"}]
        }
    )

    reason: Reason | None = Field(None, description="Recorded in the version's audit tags.")
    force: StrictBool = Field(
        False, description="Record the quality and minimum gates without enforcing them."
    )


class RollbackRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "iris-classifier"}]})

    name: ModelName = Field(description="Registered model.")
    reason: Reason | None = Field(None, description="Recorded in the version's audit tags.")


class GateOut(BaseModel):
    name: str = Field(description="quality, signature, loads or minimum.")
    passed: bool
    enforced: bool = Field(description="False: recorded only (a forced promotion, a rollback).")
    numbers: dict[str, Any] = Field(description="What the gate decided on.")
    detail: str


class GateCheckOut(BaseModel):
    name: str
    version: str
    stage: str
    passed: bool = Field(description="No enforced gate refuses: a promotion now would proceed.")
    gates: list[GateOut]


class PromotionOut(BaseModel):
    action: Literal["promote", "rollback"]
    name: str
    version: str = Field(description="The version now in the stage.")
    stage: str
    alias: str | None = Field(description="The alias that follows the stage, if configured.")
    previous_version: str | None = Field(description="The version it replaced, if any.")
    changed: bool = Field(description="False: the version was already there; aliases checked.")
    forced: bool
    gates: list[GateOut]


class GateRefusal(ErrorBody):
    gates: list[GateOut] = Field(description="Every gate's result, the refusing ones included.")


# -- history: the prediction log and this process's swaps (routes_history) -----------------

Source = Literal["rest", "async", "batch"]


class StoredPrediction(BaseModel):
    """One logged prediction, as the prediction store keeps it."""

    request_id: str
    created_at: datetime
    source: str
    model_version: str
    run_id: str | None
    features: dict[str, Any] = Field(description="The input row, by feature name.")
    prediction: Any = Field(description="The model's raw output for the row.")
    label: str | None = Field(description="The predicted class label.")
    probabilities: dict[str, float | None] | None
    latency_ms: float | None
    feedback: str | None = Field(description="The feedback label, if any was sent.")


class PredictionPage(BaseModel):
    predictions: list[StoredPrediction] = Field(description="Newest first.")
    next: str | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page."
    )


class VolumeBucket(BaseModel):
    bucket: datetime = Field(description="Start of the bucket (UTC).")
    model_version: str
    count: int


class ClassCount(BaseModel):
    model_version: str
    label: str | None
    count: int


class LatencyPercentiles(BaseModel):
    model_version: str
    n: int
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


class VersionQuality(BaseModel):
    model_version: str
    n: int = Field(description="Labelled predictions that received feedback.")
    correct: int = Field(description="Of those, the ones whose feedback label was predicted.")
    accuracy: float = Field(description="correct / n.")
    precision: float = Field(
        description="Macro precision: per label seen predicted or as feedback, correct / "
        "predicted (0 if never predicted), averaged: lifecycle_feedback_precision's formula."
    )


class PredictionStats(BaseModel):
    """Aggregates over [since, until), grouped in the database."""

    model: str
    since: datetime
    until: datetime
    bucket_seconds: int
    volume: list[VolumeBucket] = Field(description="Non-empty buckets only, oldest first.")
    classes: list[ClassCount]
    latency: list[LatencyPercentiles] = Field(
        description="Milliseconds. PostgreSQL: from a log-scale histogram, within 1 % of the "
        "exact percentile; SQLite: exact."
    )
    quality: list[VersionQuality]
    read_at: datetime


class SwapRecord(BaseModel):
    """A swap (`load_seconds` set) or a failed swap (`reason` set)."""

    kind: Literal["swap", "failure"]
    name: str
    version: str
    at: datetime
    run_id: str | None = None
    load_seconds: float | None = Field(None, description="Download, load and smoke test.")
    previous_version: str | None = None
    reason: str | None = None


class ModelHistory(BaseModel):
    pid: int = Field(description="The process that answered: each worker keeps its own.")
    swaps: list[SwapRecord] = Field(description="Newest first; the last 100 of this process.")

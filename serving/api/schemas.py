"""Hand-written OpenAPI for the bodies no fixed type describes, and the error responses.

Scoring bodies are parsed by `serving.validation` from the served model's schema (which
changes with the model), so these schemas document the shapes; the parser gives the precise
4xx. Fixed-shape bodies and answers are Pydantic models (`serving.api.models`).
"""

from __future__ import annotations

from typing import Any

from serving.api.models import ErrorBody

_NUMBER_OR_STRING = {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]}
_ROW = {
    "anyOf": [
        {"type": "array", "items": _NUMBER_OR_STRING, "example": [5.1, 3.5, 1.4, 0.2]},
        {"type": "object", "additionalProperties": _NUMBER_OR_STRING},
    ]
}
_ROWS = {"type": "array", "items": _ROW}

PREDICT: dict[str, Any] = {
    "type": "object",
    "properties": {"features": _ROW, "instances": _ROWS},
    "example": {"features": [5.1, 3.5, 1.4, 0.2]},
}
INVOCATIONS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "dataframe_split": {
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": _ROWS,
            },
            "required": ["data"],
        },
        "dataframe_records": {"type": "array", "items": {"type": "object"}},
        "instances": {"anyOf": [_ROWS, {"type": "object"}]},
        "inputs": {"anyOf": [_ROWS, {"type": "object"}]},
        "params": {"type": "object", "description": "Accepted and ignored, as by MLflow."},
    },
}
WEBHOOK: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entity": {"type": "string"},
        "action": {"type": "string"},
        "timestamp": {"type": "string"},
        "data": {"type": "object"},
    },
}


def error_responses(reasons: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries: each status with its reason and the one error body."""
    return {code: {"model": ErrorBody, "description": text} for code, text in reasons.items()}


MALFORMED = "Malformed JSON, or not UTF-8"
TOO_LARGE = "Body over the size limit"
NOT_JSON = "Not application/json"
ERRORS = error_responses(
    {
        400: MALFORMED,
        413: TOO_LARGE,
        415: NOT_JSON,
        422: "Input does not fit the model's schema",
        503: "No model loaded yet",
    }
)


_MLFLOW_ERROR = {
    "type": "object",
    "properties": {
        "error_code": {"type": "string", "example": "BAD_REQUEST"},
        "message": {"type": "string"},
        "sqlstate": {"type": "string"},
        "error_class": {"type": "string"},
    },
    "required": ["error_code", "message"],
}
MLFLOW_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"schema": _MLFLOW_ERROR}}}
    for code, text in {
        400: "Malformed body, or input that does not fit the model's schema",
        413: TOO_LARGE,
        415: "Not JSON, CSV or Parquet, or a charset other than UTF-8",
        503: "No model loaded yet",
    }.items()
}
INVOCATIONS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": INVOCATIONS},
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}

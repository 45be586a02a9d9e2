"""OpenAPI descriptions of the request bodies.

Bodies are parsed by `serving.validation` from the served model's schema (which changes with
the model), so these schemas document the shapes; the parser gives the precise 4xx.
"""

from __future__ import annotations

from typing import Any

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
        "instances": _ROWS,
        "inputs": {"anyOf": [_ROWS, {"type": "object"}]},
        "params": {"type": "object"},
    },
}
FEEDBACK: dict[str, Any] = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "label": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}]},
    },
    "required": ["request_id", "label"],
    "example": {"request_id": "0f6c…", "label": "setosa"},
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

_ERROR = {
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"detail": {"type": "string"}}}
        }
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, **_ERROR}
    for code, text in (
        (400, "Malformed JSON"),
        (413, "Body over the size limit"),
        (415, "Not application/json"),
        (422, "Input does not fit the model's schema"),
        (503, "No model loaded yet"),
    )
}


def body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}

"""Schemathesis hooks for the contract run: `SCHEMATHESIS_HOOKS=<this file>`.

/batch takes the file itself as a text/csv or Parquet body (`format: binary`). Schemathesis
sends text/csv through its text/plain serializer, which writes a generated binary value as an
empty body, and has no serializer for Parquet at all; sent as raw bytes, both bodies are the
bytes the schema describes.
"""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias(
    ["text/csv", "application/vnd.apache.parquet"], "application/octet-stream"
)

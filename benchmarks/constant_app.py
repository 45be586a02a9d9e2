"""The framework ceiling: the same stack answering a constant, no model, no logging."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/invocations")
async def invocations() -> dict[str, list[int]]:
    return {"predictions": [0]}

"""The ceilings: the same stack answering a constant, no model, no logging.

`app` is a FastAPI endpoint, the framework ceiling the scoring API is compared with; `raw` is
a bare ASGI callable, the ceiling of uvicorn itself, shown beside it because Lifecycle serves
its scoring routes with a plain ASGI handler in front of FastAPI.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/invocations")
async def invocations() -> dict[str, list[int]]:
    return {"predictions": [0]}


_BODIES = {"/health": b'{"status":"ok"}', "/invocations": b'{"predictions":[0]}'}


async def raw(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # read the body, as any endpoint must
        more = (await receive()).get("more_body", False)
    body = _BODIES.get(scope["path"], b"{}")
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})

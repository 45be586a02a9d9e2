"""`POST /predict` and `POST /invocations` as plain ASGI, in front of FastAPI's router.

A single-row request spends most of its time in the framework rather than in the model:
middleware, route matching, dependency solving, the Request object, the response classes.
These two handlers read the body from `receive`, call the same functions as the FastAPI
routes (`serving.api.scoring`) and send pre-built messages; errors go through the same
builders as the routes' (`serving.api.errors`), so status, headers and body are the routes'
byte for byte (tests/unit/test_fast_path.py compares the two). The routes stay registered:
they document both operations in the OpenAPI schema.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from lifecycle.core.errors import LifecycleError
from serving import bodies
from serving.api import errors, scoring
from serving.api.deps import Services, check_json_type, header, receive_limited, recheck

Handler = Callable[[Scope, Receive, Send, str], Awaitable[None]]
_CONTENT_TYPE = (b"content-type", b"application/json")


class FastScoring:
    """The fast handlers by path, for `RequestContext` to call instead of the app."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.routes: dict[str, Handler] = {
            "/predict": self.predict,
            "/invocations": self.invocations,
        }

    async def predict(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        started = time.perf_counter()
        services = self.services
        try:
            check_json_type(header(scope, b"content-type"))
            body = await receive_limited(scope, receive, services.settings.max_body_bytes)
            answer = scoring.predict(services, body, request_id, started, recheck(scope))
        except LifecycleError as exc:
            await errors.lifecycle_response(exc)(scope, receive, send)
            return
        except ClientDisconnect:
            return  # nobody is left to answer
        except Exception as exc:
            await errors.unexpected_response("POST", "/predict", exc)(scope, receive, send)
            return
        await _send(send, answer)

    async def invocations(
        self, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        started = time.perf_counter()
        services = self.services
        try:
            mime = bodies.media_type(header(scope, b"content-type"))
            body = await receive_limited(scope, receive, services.settings.max_body_bytes)
            answer = scoring.invocations(services, mime, body, request_id, started, recheck(scope))
        except LifecycleError as exc:
            await errors.mlflow_error(exc)(scope, receive, send)
            return
        except ClientDisconnect:
            return
        except Exception as exc:
            response = errors.mlflow_unexpected_response("POST", "/invocations", exc)
            await response(scope, receive, send)
            return
        await _send(send, answer)


async def _send(send: Send, answer: scoring.Answer) -> None:
    body = answer.body
    # The order Starlette's Response gives: the route's headers, then length and type.
    headers = [*answer.headers, (b"content-length", str(len(body)).encode()), _CONTENT_TYPE]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})

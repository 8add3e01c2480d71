"""Pure ASGI middleware that guards every request before a route reads it: the body limit.

The request id, access log and metrics middleware is in `idp/observability/middleware.py`.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestBodyTooLargeError(HTTPException):
    """Raised from `receive` once a body passes the limit; FastAPI lets HTTPException through
    its body parsing, so it becomes a 413 like any other HTTP error."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class BodySizeLimitMiddleware:
    """Refuse bodies over `max_body_size` bytes with 413, whether declared (Content-Length) or
    streamed (chunked), without reading more than the limit into memory.

    FastAPI's own `max_body_size` answers a declared oversize with a plain-text 413; this one
    keeps the `{"detail": ...}` JSON shape of every other error.

    The refusal happens when the endpoint reads the body, after routing, so it is logged and
    counted under the route like any other answer; an endpoint that reads no body is unaffected.
    """

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_size
        declared_too_large = any(
            name == b"content-length" and value.isdigit() and int(value) > limit
            for name, value in scope["headers"]
        )
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared_too_large:
                raise RequestBodyTooLargeError()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestBodyTooLargeError()
            return message

        await self.app(scope, limited_receive, send)

"""Browser-facing hardening headers on every response, and the request-head size limit.

Pure ASGI, like the request middleware: each costs a header scan per request.
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idp.configuration.settings import Settings
from idp.controllers import docs

# An API answers JSON: nothing in it may run, be framed, or leak the URL onwards. Routes that
# serve HTML (the docs pages) set their own Content-Security-Policy, which is kept.
API_CONTENT_SECURITY_POLICY: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
_ALWAYS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# Added only when the route set none: tokens, profiles and admin data are never cached; the
# JWKS, the metadata and the docs assets say how long they may be.
_DEFAULTS: Final = (
    (b"cache-control", b"no-store"),
    (b"content-security-policy", API_CONTENT_SECURITY_POLICY.encode("ascii")),
)


class SecurityHeadersMiddleware:
    """Add `nosniff`, `DENY` framing, `no-referrer`, and by default `no-store` and a CSP that
    allows nothing, to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [item for item in _ALWAYS if item[0] not in present]
                headers += [item for item in _DEFAULTS if item[0] not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeaderSizeLimitMiddleware:
    """Answer 431 when the request line and headers together exceed `max_header_size` bytes.

    `idp serve` also caps what the HTTP parser buffers (at twice this, see
    `idp.configuration.http_protocol`) so a huge header is cut off before it fills memory;
    this gives the exact limit a clear answer under any server.
    """

    def __init__(self, app: ASGIApp, max_header_size: int) -> None:
        self.app = app
        self.max_header_size = max_header_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _head_size(scope) > self.max_header_size:
            body = b'{"detail":"request header fields too large"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode("ascii")),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _head_size(scope: Scope) -> int:
    """Bytes of the request head as sent: path, query, and each `name: value` line."""
    size = len(scope.get("raw_path") or scope["path"]) + len(scope.get("query_string", b""))
    return size + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def install_http_hardening(app: FastAPI, settings: Settings) -> None:
    """The offline docs pages, the header limit and the hardening headers, on `app`."""
    docs.install_docs(app)
    app.add_middleware(HeaderSizeLimitMiddleware, max_header_size=settings.max_header_size)
    app.add_middleware(SecurityHeadersMiddleware)  # added last, runs first: the 431 gets them

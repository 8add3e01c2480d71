"""CORS for browser clients (single-page apps on another origin).

Discovery and the JWKS are public documents: any origin may read them. The token, userinfo
and revocation endpoints answer an origin only if it is the origin of a registered redirect
URI of an enabled client. Never on `/authorize` or the hosted pages: those are navigations,
not requests a script makes. Credentials (cookies) are never allowed cross-origin.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idp.services.client_auth import ClientAuthenticator

PUBLIC_PREFIX: Final = "/.well-known/"
CLIENT_PATHS: Final = frozenset({"/token", "/userinfo", "/revoke"})
_ALLOW_HEADERS: Final = b"authorization, content-type, dpop"
_MAX_AGE: Final = b"600"


class CorsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        origin = _header(scope, b"origin")
        public = path.startswith(PUBLIC_PREFIX)
        if origin is None or not (public or path in CLIENT_PATHS):
            await self.app(scope, receive, send)
            return
        allowed = b"*" if public else await self._allowed(scope, origin)
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await _preflight(send, allowed, b"GET, HEAD" if public else b"GET, POST")
            return
        if allowed is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"access-control-allow-origin", allowed))
                headers.append((b"vary", b"Origin"))
                if not public:
                    headers.append((b"access-control-expose-headers", b"www-authenticate"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _allowed(self, scope: Scope, origin: bytes) -> bytes | None:
        authenticator: ClientAuthenticator = scope["app"].state.client_auth
        origins = await authenticator.cache.origins(authenticator.database)
        return origin if origin.decode("latin-1") in origins else None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _preflight(send: Send, allowed: bytes | None, methods: bytes) -> None:
    headers = [(b"content-length", b"0"), (b"vary", b"Origin")]
    if allowed is not None:
        headers += [
            (b"access-control-allow-origin", allowed),
            (b"access-control-allow-methods", methods),
            (b"access-control-allow-headers", _ALLOW_HEADERS),
            (b"access-control-max-age", _MAX_AGE),
        ]
    status = 204 if allowed is not None else 403
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
